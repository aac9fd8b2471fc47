/**
 * Phase 3, latency: votes published at a fixed rate to the running service;
 * the time from each publish to the moment `vote_results` (polled every few
 * ms) counts it. Votes are counted in publishing order, so the visible total
 * maps to the vote indexes. With several batches committing at once the
 * mapping is approximate to within a batch.
 *
 * @module
 */

import { isDeepStrictEqual } from "node:util";
import { createTestDatabase, createTestQueue, results } from "../tests/support/servers.ts";
import { peakRssMb } from "../tests/support/process.ts";
import { spawnService } from "../tests/support/service.ts";
import { generateVotes, publishVotes } from "../tools/publish.ts";
import {
  benchEnv,
  expectedResults,
  type Options,
  SHUTDOWN_GRACE_MS,
  sleep,
  type Target,
  visibleVotes,
} from "./common.ts";
import { progress, type Row, say } from "./report.ts";

const POLL_MS = 5;

/** Runs the latency phase at `options.rate` with `BATCH_TIMEOUT_SECONDS=timeout` (on `target`, and so labelled). */
export async function latency(
  options: Options,
  timeout: string,
  signal: AbortSignal,
  target: Target & { label?: string } = {},
): Promise<Row> {
  const label = `latency ${options.rate}/s, BATCH_TIMEOUT_SECONDS=${timeout}${target.label ?? ""}`;
  const count = Math.round(options.rate * options.seconds);
  await using db = await (target.database ?? createTestDatabase)();
  await using queue = await createTestQueue();
  const env = { ...target.env, BATCH_TIMEOUT_SECONDS: timeout };
  await using service = await spawnService(benchEnv(options, db, queue, env), {
    viaStartTask: true,
    waitHealthy: false,
  });
  // Publishing starts once the service consumes, so start-up is not counted as latency.
  while ((await queue.channel.checkQueue(queue.name)).consumerCount === 0) {
    if (service.exitCode !== undefined) {
      throw new Error(
        `the service exited with ${service.exitCode} before consuming:\n${service.output().slice(-4000)}`,
      );
    }
    await sleep(20, signal);
  }

  const votes = generateVotes({ count, laws: options.laws });
  const sentAt = new Float64Array(count);
  const latencies = new Float64Array(count);
  let publishing = true;
  let publishError: unknown;
  const published = publishVotes(queue.channel, queue.name, votes.bodies, {
    rate: options.rate,
    signal,
    onSent: (i, time) => sentAt[i] = time,
  }).finally(() => publishing = false);
  published.catch((error) => publishError = error);

  let visible = 0;
  const deadline = performance.now() + options.seconds * 1000 + 60_000;
  while (visible < count) {
    signal.throwIfAborted();
    if (publishError) throw publishError;
    if (performance.now() > deadline) {
      throw new Error(`only ${visible} of ${count} votes visible a minute after the last publish`);
    }
    const now = await visibleVotes(db.sql).then((n) => {
      const at = performance.now();
      // Counted in publishing order: the votes that just became visible are the next ones published.
      for (let i = visible; i < Math.min(n, count); i++) latencies[i] = at - sentAt[i];
      visible = Math.max(visible, n);
      return at;
    });
    progress(`${label}: ${visible}/${count} visible${publishing ? ", publishing" : ""}`);
    await sleep(Math.max(0, POLL_MS - (performance.now() - now)), signal);
  }
  const result = await published;
  const rssMb = peakRssMb(service.pid);
  const code = await service.stopWithin(SHUTDOWN_GRACE_MS);
  // The service's own part: how old a batch was when its statement was sent, and how large.
  const [batches] = await db.sql<{ p50: number; p99: number; mean: number }[]>`
    select percentile_cont(0.5) within group (order by processing_time_ms) as p50,
           percentile_cont(0.99) within group (order by processing_time_ms) as p99,
           avg(batch_size)::float8 as mean
    from aggregation_stats`;
  const actual = await results(db.sql);
  const expected = expectedResults(votes);
  const notes: string[] = [
    `${label}: batches of ${batches.mean.toFixed(1)} votes on average, sent at ${batches.p50.toFixed(0)} ms ` +
    `(p50) and ${batches.p99.toFixed(0)} ms (p99) after their first message arrived; the rest of a vote's ` +
    `latency is the broker's delivery, the commit and this bench's polling`,
  ];
  const failures = notes.length;
  if (!isDeepStrictEqual(actual, expected)) {
    notes.push(`vote_results ${JSON.stringify(actual)} but expected ${JSON.stringify(expected)}`);
  }
  if (code !== 0) notes.push(`exit code ${code} after SIGTERM:\n${service.output().slice(-4000)}`);
  if (Math.abs(result.rate - options.rate) > options.rate * 0.05) {
    notes.push(
      `published at ${Math.round(result.rate)}/s, not ${options.rate}/s: the publisher could not keep the pace`,
    );
  }
  latencies.sort();
  const pick = (q: number) => latencies[Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1))];
  const row: Row = {
    phase: label,
    n: count,
    seconds: result.seconds,
    rate: result.rate,
    p50: pick(0.5),
    p99: pick(0.99),
    max: latencies[count - 1],
    rssMb,
    meanBatch: batches.mean,
    exact: notes.length === failures,
    notes,
  };
  say(
    `${label}: p50 ${row.p50!.toFixed(0)} ms, p99 ${row.p99!.toFixed(0)} ms, max ${
      row.max!.toFixed(0)
    } ms; exit ${code}`,
  );
  for (const note of notes) say(note.startsWith(label) ? note : `${label}: ${note}`);
  return row;
}
