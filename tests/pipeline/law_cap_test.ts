import assert from "node:assert/strict";
import { startService } from "../../lib/service.ts";
import { createTestDatabase, createTestQueue, results } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { waitForEvent } from "../support/wait.ts";

Deno.test('telemetry: per-law series stop at METRICS_MAX_LAWS; the other laws share law_id="other", the database has them all', async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const service = await startService(testConfig(db, queue, { METRICS_MAX_LAWS: "10", BATCH_SIZE: "25" }));
  try {
    const laws = Array.from({ length: 50 }, (_, i) => `LAW-${String(i).padStart(2, "0")}`);
    await queue.publish(laws.map((law, i) => seedVote(i, law, "oui")));
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.counted === 50);
    assert.equal(Object.keys(await results(db.sql)).length, 50, "vote_results holds every law");
    const aggregated = (await service.metrics.votesAggregated.get()).values;
    const labels = new Set(aggregated.map((v) => v.labels.law_id));
    assert.equal(labels.size, 11, "10 laws of their own, and other");
    assert.ok(labels.has("other"));
    assert.equal(aggregated.reduce((n, v) => n + v.value, 0), 50, "no vote lost from the counters");
    const totals = new Set((await service.metrics.currentVoteTotals.get()).values.map((v) => v.labels.law_id));
    assert.equal(totals.size, 10, "current_vote_totals has no summed 'other' series");
  } finally {
    await service.stop();
  }
});
