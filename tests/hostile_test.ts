/**
 * Hostile input and hostile networks (issue 12), against the service as a
 * separate process on the real broker and database: large bodies at the
 * default prefetch must not blow its memory; a broker or a database that
 * accepts TCP and then never answers must be timed out, retried, and must not
 * keep the service from stopping on SIGTERM.
 *
 * Run: `deno test --allow-net --allow-env --allow-read --allow-run --allow-write=/tmp tests/hostile_test.ts`
 *
 * @module
 */

import assert from "node:assert/strict";
import { REJECT_REASON_HEADER } from "../lib/broker/dead_letter.ts";
import { peakRssMb } from "./support/process.ts";
import { createTestDatabase, createTestQueue, results, untilQueueSettled } from "./support/servers.ts";
import { serviceEnv, type ServiceProcess, spawnService } from "./support/service.ts";
import { seedVote } from "./support/votes.ts";
import { Deadline, withOutputOnFailure } from "./support/wait.ts";

const LARGE_MESSAGES = Number(Deno.env.get("HOSTILE_LARGE_MESSAGES") ?? 60);
const LARGE_BYTES = Number(Deno.env.get("HOSTILE_LARGE_BYTES") ?? 10 * 1024 * 1024);
const VOTES_BEHIND_EACH = 50;

Deno.test("hostile: 10 MB bodies at the default prefetch keep RSS under 300 MB; each is dead-lettered oversized, every vote behind them counted", async () => {
  const deadline = new Deadline("large bodies", 240_000);
  await using db = await createTestDatabase();
  await using queue = await createTestQueue({ prefix: "votes_h12_large" });
  const large = new Uint8Array(LARGE_BYTES).fill(0x78); // "xxx…": not JSON, and far over the limit
  const expected: Record<string, [number, number]> = {};
  let voter = 0;
  for (let i = 0; i < LARGE_MESSAGES; i++) {
    const votes = Array.from({ length: VOTES_BEHIND_EACH }, () => {
      const law = `L-BIG-${voter % 5}`;
      const choice = voter % 3 ? "oui" : "non";
      const entry = expected[law] ??= [0, 0];
      entry[choice === "oui" ? 0 : 1]++;
      return seedVote(voter++, law, choice);
    });
    await queue.publish([large, ...votes]);
  }
  deadline.step(`published ${LARGE_MESSAGES} × ${LARGE_BYTES} bytes and ${voter} votes`);

  const services: ServiceProcess[] = [];
  await withOutputOnFailure(deadline, () => services, async () => {
    // The production defaults that matter here: prefetch 3000, batches of 1000.
    const service = await spawnService(
      serviceEnv(db, queue, { RABBITMQ_PREFETCH_COUNT: "3000", BATCH_SIZE: "1000", MAX_INFLIGHT_BATCHES: "1" }),
    );
    services.push(service);
    try {
      await untilQueueSettled(deadline, queue.name, 180_000);
      const peak = peakRssMb(service.pid) ?? NaN;
      deadline.step(`peak RSS ${peak.toFixed(0)} MB`);
      console.log(
        `    peak RSS with ${LARGE_MESSAGES} × ${LARGE_BYTES} byte bodies at prefetch 3000: ${peak.toFixed(0)} MB`,
      );
      assert.deepEqual(await results(db.sql), expected, "every vote behind the large bodies counted, exactly");
      assert.ok(peak < 300, `peak RSS ${peak.toFixed(0)} MB, the bound is 300 MB`);
      assert.equal(await service.stop("SIGTERM"), 0);
    } finally {
      await service[Symbol.asyncDispose]();
    }
    const dead = await queue.takeDeadLetters();
    assert.equal(dead.length, LARGE_MESSAGES, "each large body dead-lettered once");
    for (const message of dead) {
      assert.equal(message.properties.headers?.[REJECT_REASON_HEADER], "oversized");
      assert.ok(message.content.byteLength <= 16 * 1024, `copy of ${message.content.byteLength} bytes: bounded`);
      assert.match(
        String(message.properties.headers?.["x-reject-body-truncated"]),
        new RegExp(`^${LARGE_BYTES} bytes; the first 16384 kept$`),
      );
    }
  });
});
