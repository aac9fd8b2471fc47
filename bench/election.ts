/**
 * The election-sized run (`--election N`; not in CI, and for a quiet machine:
 * at 20,000 votes/s, 8 million take about 7 minutes): N messages over
 * `--laws` laws (20 for the election), 5 % duplicate attempts and 1 %
 * malformed, published in chunks of `--chunk` while the service drains. The
 * next chunk is published once the queue holds less than one chunk, so the
 * broker never holds much more than two chunks (the backlog phase shows the
 * service's memory does not depend on the queue's depth; the broker's does).
 * Reported: the drain rate and total time from the first publish to the last
 * vote visible, peak RSS, the database's size, and the exact check of the
 * drain phase (totals, duplicate attempts, dead letters, nothing left).
 *
 * @module
 */

import { peakRssMb } from "../tests/support/process.ts";
import { createTestDatabase, createTestQueue } from "../tests/support/servers.ts";
import { spawnService } from "../tests/support/service.ts";
import { type GeneratedVotes, publishVotes } from "../tools/publish.ts";
import { benchEnv, benchMix, drainRow, type Options, sleep, stopAndCheck, visibleVotes } from "./common.ts";
import { progress, type Row, say } from "./report.ts";

/** Messages `from` to `to` (excluded) of `votes`. */
function* slice(votes: GeneratedVotes, from: number, to: number): Iterable<Uint8Array> {
  for (let i = from; i < to; i++) yield votes.body(i);
}

/** Runs the election-sized drain of `options.election` messages. */
export async function election(options: Options, signal: AbortSignal): Promise<Row> {
  const n = options.election;
  const chunk = Math.min(options.chunk, n);
  const label = `election (${options.laws} laws, chunks of ${chunk.toLocaleString("en-US")})`;
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const votes = benchMix(options, n);
  await using service = await spawnService(benchEnv(options, db, queue), { viaStartTask: true, waitHealthy: false });
  const startedAt = performance.now();
  let published = 0;
  let visible = 0;
  let peakRss = 0;
  const watch = async () => {
    visible = await visibleVotes(db.sql);
    peakRss = Math.max(peakRss, peakRssMb(service.pid) ?? 0);
    const rate = visible / Math.max(0.001, (performance.now() - startedAt) / 1000);
    progress(`${label}: ${published}/${n} published, ${visible}/${votes.valid} visible, ${Math.round(rate)}/s`);
    if (service.exitCode !== undefined) {
      throw new Error(`the service exited with ${service.exitCode}:\n${service.output().slice(-4000)}`);
    }
  };
  for (let from = 0; from < n; from += chunk) {
    // The broker holds at most this chunk and less than one before it.
    while (from > 0 && await queue.count() >= chunk) {
      await watch();
      await sleep(500, signal);
    }
    const to = Math.min(n, from + chunk);
    await publishVotes(queue.channel, queue.name, slice(votes, from, to), { signal });
    published = to;
    await watch();
  }
  while (visible < votes.valid) {
    signal.throwIfAborted();
    await watch();
    await sleep(100, signal);
  }
  const seconds = (performance.now() - startedAt) / 1000;
  peakRss = Math.max(peakRss, peakRssMb(service.pid) ?? 0);
  const failures = await stopAndCheck([service], db, queue, votes);
  const [size] = await db.sql<{ database: string; audit: string }[]>`
    select pg_size_pretty(pg_database_size(current_database())) as database,
           pg_size_pretty(pg_total_relation_size('vote_audit')) as audit`;
  say(
    `${label}: ${n} messages in ${seconds.toFixed(1)} s (${Math.round(n / seconds)}/s, publishing included); ` +
      `peak RSS ${
        peakRss.toFixed(0)
      } MB; database ${size.database} (vote_audit ${size.audit}); exit ${service.exitCode}`,
  );
  for (const failure of failures) say(`${label}: NOT EXACT: ${failure}`);
  return drainRow(label, n, seconds, failures, {
    rssMb: peakRss,
    notes: [
      `${label}: ${votes.valid} valid, ${votes.duplicates} duplicate, ${votes.malformed} malformed; ` +
      `timed from the first publish (publishing while draining) to the last vote visible; ` +
      `database ${size.database}, vote_audit ${size.audit}`,
    ],
  });
}
