/**
 * Phase `--counting N`: what the counting statement costs PostgreSQL, without
 * the broker or the service's process: N votes committed through the service's
 * own writer (`VoteWriter`) in batches of `--batch-size`, on one connection to
 * a fresh database, and the CPU of that connection's backend per vote. Three
 * runs: distinct votes; 5 % duplicate attempts (each after its original, the
 * second statement records them); the same with the validation worker's
 * `'validated'` row of every vote written first (counting then adopts those
 * rows). Each database is fresh and its statistics as autovacuum leaves them:
 * the case where the plans used to scan whole partial indexes (docs/performance.md).
 *
 * @module
 */

import { migrate } from "../lib/database/migrations.ts";
import { parseVote, type Vote } from "../lib/vote.ts";
import { VoteWriter } from "../lib/database/writer.ts";
import { cpuSeconds } from "../tests/support/process.ts";
import { createTestDatabase, insertAuditRows, testPool } from "../tests/support/servers.ts";
import { generateVotes } from "../tools/publish.ts";
import { DUPLICATE_FRACTION, type Options } from "./common.ts";
import { progress, type Row, say } from "./report.ts";

const RUNS = [
  { label: "distinct votes", duplicates: 0, workerRows: false },
  { label: "5 % duplicate attempts", duplicates: DUPLICATE_FRACTION, workerRows: false },
  { label: "5 % duplicates, the worker's rows first", duplicates: DUPLICATE_FRACTION, workerRows: true },
] as const;

/** One row per run: `n` votes committed, with the backend's CPU per vote. */
export async function counting(options: Options, n: number, signal: AbortSignal): Promise<Row[]> {
  const rows: Row[] = [];
  for (const run of RUNS) {
    await using db = await createTestDatabase();
    const sql = testPool(db.url, 1);
    try {
      await migrate(sql);
      const votes = votesOf(n, options.laws, run.duplicates, options.batchSize);
      if (run.workerRows) await insertAuditRows(sql, firstCopies(votes), "validated");
      const [{ pid }] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
      const writer = new VoteWriter(sql, { instance: "bench-counting" });
      const cpuBefore = cpuSeconds(pid) ?? 0;
      const started = performance.now();
      let counted = 0;
      for (let i = 0; i < votes.length; i += options.batchSize) {
        signal.throwIfAborted();
        counted += (await writer.commit(votes.slice(i, i + options.batchSize))).counted;
        progress(`counting, ${run.label}: ${Math.min(votes.length, i + options.batchSize)}/${votes.length} votes`);
      }
      const seconds = (performance.now() - started) / 1000;
      const backendUs = ((cpuSeconds(pid) ?? 0) - cpuBefore) / votes.length * 1e6;
      const [{ stored }] = await db.sql`select coalesce(sum(total_votes), 0)::int as stored from vote_results`;
      say(
        `counting, ${run.label}: ${votes.length} votes in ${seconds.toFixed(2)} s, the backend ` +
          `${backendUs.toFixed(1)} µs a vote; ${counted} counted`,
      );
      rows.push({
        phase: `counting statement, ${run.label}`,
        n: votes.length,
        seconds,
        rate: votes.length / seconds,
        postgresUs: backendUs,
        meanBatch: options.batchSize,
        exact: stored === counted,
        notes: [],
      });
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
  return rows;
}

/** `n` votes over `laws` laws, a fraction of them duplicate attempts at least one batch after their original. */
function votesOf(n: number, laws: number, duplicates: number, batchSize: number): Vote[] {
  const generated = generateVotes({
    count: n,
    laws,
    duplicateFraction: duplicates,
    malformedFraction: 0,
    minDuplicateDistance: batchSize,
  });
  const votes: Vote[] = [];
  for (const body of generated.bodies) {
    const parsed = parseVote(body);
    if (parsed.ok) votes.push(parsed.vote);
  }
  return votes;
}

/** The first vote of each hash: the worker writes one row per distinct vote. */
function firstCopies(votes: Vote[]): Vote[] {
  const seen = new Set<string>();
  return votes.filter((v) => !seen.has(v.hash) && seen.add(v.hash));
}
