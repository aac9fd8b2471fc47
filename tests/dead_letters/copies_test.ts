import type { ConsumeMessage } from "amqplib";
import assert from "node:assert/strict";
import { DeadLetterPublisher, ORIGINAL_DIGEST_HEADER } from "../../lib/broker/dead_letter.ts";
import { toDelivery } from "../../lib/broker/delivery.ts";
import { createTestDatabase, createTestQueue, untilQueueSettled, withChannel } from "../support/servers.ts";
import { serviceEnv, type ServiceProcess, spawnService } from "../support/service.ts";
import { runTool } from "../support/tool.ts";
import { Deadline, withOutputOnFailure } from "../support/wait.ts";

Deno.test("dead-letters CLI: a message dead-lettered twice (its acknowledgement lost) is counted once and replayed once", async () => {
  await using db = await createTestDatabase();
  // Quorum: a redelivery there also carries a delivery count the first delivery did not.
  await using queue = await createTestQueue({ quorum: true, prefix: "votes_h25b" });
  const deadline = new Deadline("dead-letter copies", 60_000);
  const services: ServiceProcess[] = [];
  await withOutputOnFailure(deadline, () => services, async () => {
    const twice = '{"law_id": "L1"}';
    const once = "{not json";
    await queue.publish([twice]);
    // The service's own publisher makes the first copy and has it confirmed; then the connection is lost
    // before the original is acknowledged, so the broker delivers the original again.
    await withChannel(async (channel) => {
      const message = await new Promise<ConsumeMessage>((resolve) => {
        channel.consume(queue.name, (delivered) => delivered && resolve(delivered), { noAck: false });
      });
      const publisher = new DeadLetterPublisher(queue.name);
      publisher.watch(channel);
      await publisher.publish(channel, toDelivery(message, 1, 1024 * 1024), {
        reason: "missing_field",
        detail: "no voter_id",
      });
    });
    assert.equal(await queue.count(queue.dlq), 1, "the first copy is stored");
    await queue.publish([once]);
    const env = serviceEnv(db, queue, { RABBITMQ_QUEUE_TYPE: "quorum" });
    services.push(await spawnService(env));
    await deadline.until(async () => await queue.count(queue.dlq) === 3, "the service dead-letters both messages");
    await untilQueueSettled(deadline, queue.name);
    assert.equal(await services[0].stop("SIGTERM"), 0);

    const shown = await runTool("dead_letters.ts", ["show", "--json"], env);
    assert.equal(shown.code, 0, shown.stderr);
    const letters = JSON.parse(shown.stdout) as { digest: string | null; reason: string }[];
    assert.deepEqual(letters.map((l) => l.reason), ["missing_field", "missing_field", "invalid_json"]);
    assert.match(letters[0].digest ?? "", /^[0-9a-f]{64}$/);
    assert.equal(letters[1].digest, letters[0].digest, "the redelivered original's copy has the first copy's digest");
    assert.notEqual(letters[2].digest, letters[0].digest, "another message has another digest");

    const summary = await runTool("dead_letters.ts", ["summary", "--json"], env);
    assert.equal(summary.code, 0, summary.stderr);
    const counted = JSON.parse(summary.stdout);
    assert.deepEqual(
      [counted.total, counted.messages, counted.extraCopies, counted.byReason, counted.byLaw],
      [3, 2, 1, { missing_field: 1, invalid_json: 1 }, { L1: 1, "(none)": 1 }],
    );
    const text = await runTool("dead_letters.ts", ["summary"], env);
    assert.match(text.stdout, /: 2 dead-lettered messages \(3 letters: 1 extra copies of messages counted once\)\n/);

    const replay = await runTool("dead_letters.ts", ["replay", "--json"], env);
    assert.equal(replay.code, 0, replay.stderr);
    assert.deepEqual(JSON.parse(replay.stdout), { replayed: 2, extraCopies: 1, kept: 0, truncated: 0 });
    assert.equal(await queue.count(queue.dlq), 0, "the extra copy left the DLQ with its message");
    const replayed = await withChannel(async (channel) => {
      const bodies: string[] = [];
      for (let message; (message = await channel.get(queue.name, { noAck: true }));) {
        assert.equal(message.properties.headers?.[ORIGINAL_DIGEST_HEADER], undefined, "a replayed vote has no digest");
        bodies.push(message.content.toString());
      }
      return bodies;
    });
    assert.deepEqual(replayed.sort(), [twice, once].sort(), "each message republished once");
  });
});
