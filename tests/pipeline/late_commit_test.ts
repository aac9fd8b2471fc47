import assert from "node:assert/strict";
import { startService } from "../../lib/service.ts";
import { createTestDatabase, createTestQueue, results } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { waitForEvent, waitUntil } from "../support/wait.ts";

Deno.test("telemetry: a commit that times out but commits later is counted once in the metrics, as in the database", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const service = await startService(
    testConfig(db, queue, { COMMIT_TIMEOUT_SECONDS: "0.3", MAX_RETRY_ATTEMPTS: "50", BATCH_SIZE: "50" }),
  );
  const lock = await db.sql.reserve();
  try {
    await queue.publish([seedVote(0, "L-LATE", "oui")]);
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.counted === 1);

    // Hold the law's row: the next batch's transaction waits on it past the commit timeout, and commits
    // once the lock goes, while its retries find its votes stored.
    await lock`begin`;
    await lock`select * from vote_results where law_id = 'L-LATE' for update`;
    await queue.publish(Array.from({ length: 50 }, (_, i) => seedVote(i + 1, "L-LATE", i % 2 ? "oui" : "non")));
    let retries = 0;
    await waitUntil(
      async () => {
        retries = (await service.metrics.aggregationErrors.get()).values
          .find((v) => v.labels.error_type === "database_retry")?.value ?? 0;
        return retries >= 2;
      },
      "the blocked commit timed out and was retried",
      20_000,
      50,
    );
    await lock`rollback`;

    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === 51);
    assert.deepEqual(await results(db.sql), { "L-LATE": [26, 25] }, "the database counted each vote once");
    const aggregated = (await service.metrics.votesAggregated.get()).values.reduce((n, v) => n + v.value, 0);
    await waitUntil(
      async () => {
        const n = (await service.metrics.votesAggregated.get()).values.reduce((sum, v) => sum + v.value, 0);
        return n === 51;
      },
      `votes_aggregated_total reaches 51 (was ${aggregated})`,
      5_000,
      20,
    );
    assert.equal(service.aggregator.totals.counted, 51, "totals follow what the database committed");
    assert.equal(service.aggregator.totals.redelivered, 0, "the late commit's votes are not redeliveries");
  } finally {
    lock.release();
    await service.stop();
  }
});
