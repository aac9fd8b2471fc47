import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { REJECT_REASON_HEADER } from "../../lib/broker/dead_letter.ts";
import { verify } from "../../lib/audit/verify.ts";
import {
  createTestDatabase,
  createTestQueue,
  results,
  testPool,
  untilQueueSettled,
  withChannel,
} from "../support/servers.ts";
import { serviceEnv, type ServiceProcess, spawnService } from "../support/service.ts";
import { runTool } from "../support/tool.ts";
import { seedVote } from "../support/votes.ts";
import { Deadline, withOutputOnFailure } from "../support/wait.ts";

Deno.test("dead-letters CLI: replay counts each replayed vote exactly once; summary, purge, bad flags", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const deadline = new Deadline("replay", 60_000);
  const services: ServiceProcess[] = [];
  await withOutputOnFailure(deadline, () => services, async () => {
    const env = serviceEnv(db, queue);
    services.push(await spawnService(env));
    const a = seedVote(1, "L1", "oui");
    const b = seedVote(2, "L1", "non");
    await queue.publish([a]);
    await deadline.until(async () => (await results(db.sql)).L1?.[0] === 1, "vote a counted");
    // a was counted already; b was refused (say, before a migration); its letter is there twice.
    await withChannel(async (ch) => {
      for (const [body, reason] of [[a, "database_rejected"], [b, "database_rejected"], [b, "database_rejected"]]) {
        ch.sendToQueue(queue.dlq, Buffer.from(body), { persistent: true, headers: { [REJECT_REASON_HEADER]: reason } });
      }
      ch.sendToQueue(queue.dlq, Buffer.from("{nope"), { headers: { [REJECT_REASON_HEADER]: "invalid_json" } });
      await ch.waitForConfirms();
    });

    const summary = await runTool("dead_letters.ts", ["summary", "--json"], env);
    assert.equal(summary.code, 0, summary.stderr);
    assert.deepEqual(JSON.parse(summary.stdout).byReason, { database_rejected: 3, invalid_json: 1 });
    const text = await runTool("dead_letters.ts", ["show", "--reason", "invalid_json"], env);
    assert.match(text.stdout, /^#3 invalid_json \(service\) law=- .*\n {2}body: \{nope$/m);

    const replay = await runTool("dead_letters.ts", ["replay", "--reason", "database_rejected", "--json"], env);
    assert.equal(replay.code, 0, replay.stderr);
    assert.deepEqual(JSON.parse(replay.stdout), { replayed: 3, extraCopies: 0, kept: 1, truncated: 0 });
    await untilQueueSettled(deadline, queue.name);
    assert.deepEqual(await results(db.sql), { L1: [1, 1] }, "a and b counted once each");
    assert.equal(await queue.count(queue.dlq), 1, "only the letter not replayed is left");
    const pool = testPool(db.url);
    try {
      assert.equal((await verify(pool)).ok, true);
    } finally {
      await pool.end({ timeout: 1 });
    }

    for (
      const args of [
        ["purge", "--reason", "invalid_json"],
        ["purge", "--yes"],
        ["bogus"],
        ["summary", "--limit", "3"],
        [
          "show",
          "--limit",
          "0",
        ],
      ]
    ) {
      const run = await runTool("dead_letters.ts", args, env);
      assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
      assert.match(run.stderr, /^dead-letters: .*\nUsage: dead-letters /);
    }
    assert.equal(await queue.count(queue.dlq), 1, "a refused purge removes nothing");
    const purge = await runTool("dead_letters.ts", ["purge", "--reason", "invalid_json", "--yes"], env);
    assert.equal(purge.code, 0, purge.stderr);
    assert.match(purge.stdout, /purged 1 with reason invalid_json, 0 left in place/);
    assert.equal(await queue.count(queue.dlq), 0);
    assert.equal(await services[0].stop("SIGTERM"), 0);
  });
});
