import assert from "node:assert/strict";
import { REJECT_REASON_HEADER } from "../../lib/broker/dead_letter.ts";
import { startService } from "../../lib/service.ts";
import { createTestDatabase, createTestQueue, rabbitmqctl, results } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { seedVote, workerVote } from "../support/votes.ts";
import { waitForEvent } from "../support/wait.ts";

/** The seed aggregator's declaration, and the seed publisher's. */
const SEED_ARGUMENTS: Record<string, Record<string, unknown>> = {
  "the seed aggregator's x-message-ttl and x-max-length": { "x-message-ttl": 86_400_000, "x-max-length": 1_000_000 },
  "the seed publisher's x-max-priority": { "x-max-priority": 10 },
};

for (const [label, args] of Object.entries(SEED_ARGUMENTS)) {
  Deno.test(`topology: a queue pre-declared with ${label} is adopted as it is and consumed exactly`, async () => {
    await using db = await createTestDatabase();
    await using queue = await createTestQueue({ declare: false });
    await queue.channel.assertQueue(queue.name, { durable: true, arguments: args });
    const bodies = [
      ...Array.from({ length: 30 }, (_, i) => seedVote(i, "L-SEEDQ", i % 3 ? "oui" : "non")),
      ...Array.from({ length: 20 }, (_, i) => workerVote(100 + i, "L-SEEDQ", "NON")),
      "not json",
      seedVote(0, "L-SEEDQ", "oui"), // a redelivery of the first
    ];
    await queue.publish(bodies);
    const service = await startService(testConfig(db, queue));
    try {
      await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === bodies.length);
      assert.deepEqual(await results(db.sql), { "L-SEEDQ": [20, 30] });
      assert.equal(service.broker.consuming, true);
    } finally {
      await service.stop();
    }
    const dead = await queue.takeDeadLetters();
    assert.equal(dead.length, 1, "the service's own dead-letter queue still gets the malformed message");
    assert.equal(dead[0].properties.headers?.[REJECT_REASON_HEADER], "invalid_json");
    assert.equal(await queue.count(), 0, "nothing left in the queue");
    const info = await queue.info();
    for (const [key, value] of Object.entries(args)) assert.equal(info.arguments[key], value, `${key} kept`);
  });
}

Deno.test("topology: a quorum vote queue gets a quorum dead-letter queue; a classic one from before is used as it is", async () => {
  for (const existing of ["none", "classic"] as const) {
    await using db = await createTestDatabase();
    await using queue = await createTestQueue({ declare: false });
    if (existing === "classic") await queue.channel.assertQueue(queue.dlq, { durable: true });
    const service = await startService(testConfig(db, queue, { RABBITMQ_QUEUE_TYPE: "quorum" }));
    try {
      await queue.publish(["not json", seedVote(1, "L-QDLQ", "oui")]);
      await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === 2);
      assert.deepEqual(await results(db.sql), { "L-QDLQ": [1, 0] });
    } finally {
      await service.stop();
    }
    assert.equal((await queue.takeDeadLetters()).length, 1, `${existing}: the malformed message is dead-lettered`);
    const types = Object.fromEntries(
      (JSON.parse(await rabbitmqctl("list_queues", "-q", "--formatter", "json", "name", "type")) as {
        name: string;
        type: string;
      }[]).map((q) => [q.name, q.type]),
    );
    assert.equal(types[queue.name], "quorum");
    assert.equal(types[queue.dlq], existing === "classic" ? "classic" : "quorum", `${existing}: the DLQ's type`);
  }
});
