/**
 * The scaling phase (`--scaling 1,2,3,6`): K instances of the service, started together as
 * `deno task start` starts them, drain N preloaded messages (5 % duplicate attempts, 1 % malformed)
 * from one queue into one database; for each K: the drain rate (from the last instance up to the last vote), the
 * service CPU per message (user + system of every instance, from /proc; and of their PostgreSQL
 * backends, when PostgreSQL runs on this machine), and PostgreSQL's lock waits,
 * sampled every 100 ms from `pg_stat_activity` (backends of this database waiting, and on what)
 * and `pg_locks` (locks not granted, on `vote_results` or on a transaction id: a row lock). The
 * totals, `duplicate_attempts` and the DLQ are checked exactly.
 *
 * @module
 */

import { createTestDatabase, createTestQueue } from "../tests/support/servers.ts";
import { cpuSeconds } from "../tests/support/process.ts";
import { type ServiceProcess, spawnService } from "../tests/support/service.ts";
import {
  benchEnv,
  benchMix,
  drainRow,
  type Options,
  preload,
  sleep,
  stopAndCheck,
  untilAllVisible,
  visibleVotes,
} from "./common.ts";
import { progress, type Row, say } from "./report.ts";
import type postgres from "postgres";

/** What the lock sampler saw. */
interface LockSamples {
  samples: number;
  /** Samples where at least one of this database's backends was running a statement. */
  active: number;
  /** Backend-samples waiting on a heavyweight lock, by wait_event (transactionid, tuple, relation …). */
  lockWaits: Record<string, number>;
  /** Samples with a lock not granted on vote_results or on a transaction id (pg_locks). */
  ungranted: number;
}

async function sampleLocks(sql: postgres.Sql, database: string, until: AbortSignal): Promise<LockSamples> {
  const seen: LockSamples = { samples: 0, active: 0, lockWaits: {}, ungranted: 0 };
  while (!until.aborted) {
    const rows = await sql<{ state: string | null; wait_event_type: string | null; wait_event: string | null }[]>`
      select state, wait_event_type, wait_event from pg_stat_activity
      where datname = ${database} and application_name = 'vote-aggregator'`;
    const [{ ungranted }] = await sql<{ ungranted: number }[]>`
      select count(*)::int as ungranted from pg_locks l join pg_stat_activity a using (pid)
      where not l.granted and a.datname = ${database}
        and (l.locktype in ('transactionid', 'tuple') or l.relation = to_regclass('vote_results'))`;
    seen.samples++;
    if (rows.some((r) => r.state === "active")) seen.active++;
    for (const r of rows) {
      if (r.wait_event_type === "Lock") {
        seen.lockWaits[r.wait_event ?? "?"] = (seen.lockWaits[r.wait_event ?? "?"] ?? 0) + 1;
      }
    }
    if (ungranted > 0) seen.ungranted++;
    await sleep(100).catch(() => {});
  }
  return seen;
}

/** CPU seconds of this database's service backends (PostgreSQL runs on this machine, the bench as root or postgres). */
async function backendCpu(sql: postgres.Sql, database: string): Promise<Map<number, number>> {
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = ${database} and application_name = 'vote-aggregator'`;
  return new Map(rows.map(({ pid }) => [pid, cpuSeconds(pid) ?? 0]));
}

/** Runs the drain with `instances` services on one queue and one database. */
export async function scaling(options: Options, instances: number, n: number, signal: AbortSignal): Promise<Row> {
  const label = `scaling: ${instances} instance${instances > 1 ? "s" : ""}`;
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  // With several consumers the broker's order is not the commit order: an instance may still hold a vote
  // while another commits a later copy of it. Duplicates then change only the timestamp (no distance is
  // far enough), so vote_results is the same whichever copy wins; duplicate_attempts is still exact.
  const votes = benchMix(options, n, instances > 1 ? n : options.prefetch);
  await preload(queue, votes, label, signal);

  // The instances start one by one as fast as they can; the window measured opens when the last one
  // answers /healthz (what was counted before is subtracted), so every instance is in it throughout.
  const services: ServiceProcess[] = await Promise.all(
    Array.from({ length: instances }, () => spawnService(benchEnv(options, db, queue), { viaStartTask: true })),
  );
  const allUpAt = performance.now();
  const visibleAtStart = await visibleVotes(db.sql);
  const cpuAtStart = services.map((s) => cpuSeconds(s.pid) ?? 0);
  const backendsAtStart = await backendCpu(db.sql, db.name);
  const stopSampling = new AbortController();
  const locks = sampleLocks(db.sql, db.name, stopSampling.signal);
  let cpuAtEnd: number[] = [];
  let backendsAtEnd = new Map<number, number>();
  try {
    await untilAllVisible(db, votes, services, signal, (visible) => {
      progress(`${label}: ${visible}/${votes.valid} votes visible`);
    });
    cpuAtEnd = services.map((s) => cpuSeconds(s.pid) ?? 0);
    backendsAtEnd = await backendCpu(db.sql, db.name);
  } finally {
    stopSampling.abort();
  }
  const lastVisibleAt = performance.now();
  const seen = await locks;
  const failures = (await stopAndCheck(services, db, queue, votes)).map((failure) => `${label}: ${failure}`);

  const [size] = await db.sql<{ audit: string; results: string; stats: string; duplicates: string }[]>`
    select pg_total_relation_size('vote_audit') as audit, pg_total_relation_size('vote_results') as results,
           pg_total_relation_size('aggregation_stats') as stats,
           pg_total_relation_size('duplicate_attempts') as duplicates`;
  const seconds = (lastVisibleAt - allUpAt) / 1000;
  const counted = votes.valid - visibleAtStart;
  const messages = Math.round(n * counted / votes.valid);
  const cpu = cpuAtEnd.reduce((sum, c, i) => sum + c - cpuAtStart[i], 0);
  const cpuPerMessageUs = (cpu / messages) * 1e6;
  // A backend opened during the window counts from 0.
  let pgCpu = 0;
  for (const [pid, seconds] of backendsAtEnd) pgCpu += seconds - (backendsAtStart.get(pid) ?? 0);
  const waits = Object.entries(seen.lockWaits).map(([event, count]) => `${event} ${count}`).join(", ") || "none";
  const summary =
    `${label}: ${counted} of ${votes.valid} votes (≈ ${messages} of ${n} messages) in ${
      seconds.toFixed(2)
    } s once all were up (${Math.round(messages / seconds)} messages/s); service CPU ${cpu.toFixed(2)} s = ${
      cpuPerMessageUs.toFixed(1)
    } µs per message, its PostgreSQL backends ${
      ((pgCpu / messages) * 1e6).toFixed(1)
    } µs; lock waits in ${seen.samples} samples (${seen.active} with a statement running): ${waits}; ` +
    `samples with a row or vote_results lock not granted: ${seen.ungranted}; on disk: vote_audit ${
      (Number(size.audit) / votes.valid).toFixed(0)
    } B per vote (indexes included), vote_results ${size.results} B, aggregation_stats ${
      (Number(size.stats) / 1e6).toFixed(1)
    } MB, duplicate_attempts ${(Number(size.duplicates) / 1e6).toFixed(1)} MB`;
  say(summary);
  return drainRow(label, messages, seconds, failures, { notes: [summary] });
}
