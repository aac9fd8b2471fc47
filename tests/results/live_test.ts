/**
 * Live results under pressure, against the real service: clients that never
 * read do not grow the service's memory nor stop counting, and at shutdown
 * every stream ends (after its last totals), before the HTTP server stops.
 */
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { resultsService } from "../support/results.ts";
import { results } from "../support/servers.ts";
import { rssMbOf } from "../support/service.ts";
import { openStream, streamCrowd } from "../support/sse.ts";
import { addResults, buildMix } from "../support/votes.ts";
import { waitForEvent, waitUntil } from "../support/wait.ts";

Deno.test("results: clients that never read hold no memory in the service and slow nothing; shutdown ends every stream", async () => {
  // Every commit an event (no coalescing): the clients that never read are owed as much as can be, so that
  // their connections fill up (with 100 ms coalescing a fast machine sends too little to fill them, and
  // their streams end, their last bytes waiting in the buffers: the HTTP server's close then waits 5 s).
  await using setup = await resultsService("h14_live", { RESULTS_MAX_CLIENTS: "100", RESULTS_EVENT_INTERVAL_MS: "0" });
  const { db, queue, service } = setup;
  const laws = 1000;
  const warmUp = buildMix({ valid: 3000, laws, seed: 9 });
  await queue.publish(warmUp.bodies);
  await using slow = await streamCrowd(`${service.url}/results/stream`, 60, false);
  {
    assert.equal(slow.count, 60);
    await using fast = await openStream(`${service.url}/results/stream`);
    await waitForEvent(fast.changed, "event", () => isDeepStrictEqual(fast.totals(), warmUp.expected), 30_000);
    await waitUntil(
      async () => (await fetch(`${service.url}/status`).then((r) => r.json())).open_batch_messages === 0,
      "idle",
    );
    const before = await rssMbOf(service);

    // ~600 commits of up to 50 laws each, each sent as an event (tens of laws, KB each):
    // each never-reading client is "owed" all of them, several MB.
    const more = buildMix({ valid: 30_000, laws, seed: 10, voterBase: 100_000 });
    const started = performance.now();
    await queue.publish(more.bodies);
    const expected = addResults(warmUp.expected, more.expected);
    await waitForEvent(
      fast.changed,
      "event",
      () => isDeepStrictEqual(fast.totals(), expected),
      120_000,
      () => `${[...fast.laws.values()].reduce((n, l) => n + l.total_votes, 0)} votes streamed`,
    );
    const seconds = (performance.now() - started) / 1000;
    const after = await rssMbOf(service);
    const events = fast.events.length;
    assert.deepEqual(await results(db.sql), expected);
    assert.ok(events > 20, `the fast client was sent ${events} events`);
    // The pipeline alone grows RSS by ~35 MB over such a drain (measured with no stream client). Were
    // the 60 clients owed their events in memory, that would be 60 × several MB on top: hundreds of MB.
    assert.ok(after - before < 80, `RSS ${before.toFixed(0)} → ${after.toFixed(0)} MB with 60 clients not reading`);
    console.log(
      `    60 non-reading clients: RSS ${before.toFixed(0)} → ${after.toFixed(0)} MB; 30,000 votes streamed in ` +
        `${seconds.toFixed(1)} s (${events} events to the reading client)`,
    );

    // Shutdown: the reading stream gets its last totals and ends; the 60 others are cut; exit 0, promptly.
    const stopping = performance.now();
    const code = await service.stopWithin(20_000);
    assert.equal(code, 0);
    await waitForEvent(fast.changed, "end", () => fast.ended, 5_000);
    assert.deepEqual(fast.totals(), expected, "the stream ended on the committed totals");
    assert.ok(performance.now() - stopping < 10_000, "streams do not hold the shutdown");
    assert.match(service.output(), /stream\(s\) not reading; cut/);
  }
});
