/**
 * What the phases share: the options, the service's environment for a phase,
 * preloading a queue, waiting for what the service makes visible, stopping it
 * and checking what it counted, and a drain's row.
 *
 * @module
 */

import { isDeepStrictEqual } from "node:util";
import type postgres from "postgres";
import { RABBITMQ_URL, results, type TestDatabase, type TestQueue, visibleVotes } from "../tests/support/servers.ts";

export { visibleVotes };
import { freePort, type ServiceProcess } from "../tests/support/service.ts";
import { type GeneratedVotes, generateVotes, publishVotes } from "../tools/publish.ts";
import { progress, type Row, say } from "./report.ts";

/** The benchmark's options (see `USAGE` in main.ts). */
export interface Options {
  n: number;
  rate: number;
  seconds: number;
  timeouts: string[];
  backlog: number;
  /** Messages of the election-sized run (0: skipped), published in chunks of `chunk`. */
  election: number;
  chunk: number;
  laws: number;
  batchSize: number;
  prefetch: number;
  inflight: number;
  /** POSTGRES_PREPARE for the service. */
  prepare: string;
  skipCeiling: boolean;
  skipDrain: boolean;
  skipLatency: boolean;
  /** Results stream subscribers of the subscribers phase; 0 skips it. */
  subscribers: number;
  /** RESULTS_EVENT_INTERVAL_MS of the subscribers phase. */
  eventIntervalMs: number;
  /** Viewers of the viewers phase, polling through nginx; 0 skips it (viewers.ts). */
  viewers: number;
  /** Pause of each viewer between an answer and its next request; 0: none. */
  viewerIntervalMs: number;
  /** Also run the ledger's cost phase (ledger.ts). */
  ledger: boolean;
  /** Also the drain and latency with POSTGRES_MIN_STANDBYS 0 and 1 on a primary with a standby (standbys.ts). */
  standbys: boolean;
  /** Votes of the recount phase's database; 0 skips it (recount.ts). */
  recount: number;
  /** Messages of the counting phase; 0 skips it (counting.ts). */
  counting: number;
  /** Seconds of each outage of the recovery phase; 0 skips it (recovery.ts). */
  recovery: number;
  phaseTimeoutMs: number;
  /** Instance counts of the scaling phase; empty: skipped. */
  scaling: number[];
}

/**
 * Where a drain or latency phase runs, when not on a fresh database of the local PostgreSQL with the
 * service's defaults (the standbys phase: a primary with a streaming standby, POSTGRES_MIN_STANDBYS).
 */
export interface Target {
  /** A fresh database for the phase. @default createTestDatabase (tests/support/servers.ts) */
  database?: () => Promise<TestDatabase>;
  /** More variables for the service. */
  env?: Record<string, string>;
}

export const DUPLICATE_FRACTION = 0.05;
export const MALFORMED_FRACTION = 0.01;
/** Longest a service may take to stop after SIGTERM. */
export const SHUTDOWN_GRACE_MS = 60_000;

/** A pause that ends early, rejecting, when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Publishes `votes` to `queue`, confirmed, with progress. */
export async function preload(
  queue: TestQueue,
  votes: GeneratedVotes,
  label: string,
  signal: AbortSignal,
): Promise<void> {
  const result = await publishVotes(queue.channel, queue.name, votes.bodies, {
    signal,
    onProgress: (n) => progress(`${label}: preloading ${n}/${votes.count}`),
  });
  say(
    `${label}: preloaded ${result.published} messages in ${result.seconds.toFixed(1)} s (${Math.round(result.rate)}/s)`,
  );
}

/** The service's environment for one phase: the bench's settings, the rest the service's defaults. */
export function benchEnv(
  options: Options,
  db: { url: string },
  queue: TestQueue,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    RABBITMQ_URL,
    RABBITMQ_QUEUE: queue.name,
    DATABASE_URL: db.url,
    PROMETHEUS_PORT: String(freePort()),
    HTTP_HOST: "127.0.0.1",
    LOG_LEVEL: "INFO",
    BATCH_SIZE: String(options.batchSize),
    RABBITMQ_PREFETCH_COUNT: String(options.prefetch),
    MAX_INFLIGHT_BATCHES: String(options.inflight),
    POSTGRES_PREPARE: options.prepare,
    ...extra,
  };
}

/**
 * The measured phases' mix of `n` messages: {@link DUPLICATE_FRACTION} duplicate attempts and
 * {@link MALFORMED_FRACTION} malformed, over `options.laws` laws, each duplicate at least
 * `minDuplicateDistance` messages after its original (default: the prefetch, so that the first copy is
 * committed first).
 */
export function benchMix(options: Options, n: number, minDuplicateDistance = options.prefetch): GeneratedVotes {
  return generateVotes({
    count: n,
    laws: options.laws,
    duplicateFraction: DUPLICATE_FRACTION,
    malformedFraction: MALFORMED_FRACTION,
    minDuplicateDistance,
  });
}

/** PIDs of the service's PostgreSQL backends on `db` (its write pool's `application_name`), for their CPU. */
export async function serviceBackends(db: { sql: postgres.Sql }): Promise<number[]> {
  const rows = await db.sql<{ pid: number }[]>`
    select pid from pg_stat_activity
    where datname = current_database() and application_name = 'vote-aggregator'`;
  return rows.map((r) => r.pid);
}

/** The generator's expected totals in the shape of the tests' `results()`: `{law: [oui, non]}`. */
export function expectedResults(votes: GeneratedVotes): Record<string, [number, number]> {
  return Object.fromEntries(Object.entries(votes.expected).map(([law, t]) => [law, [t.oui, t.non]]));
}

/**
 * What is not exact after a drain of `votes` (empty when all is): `vote_results` against the generator's
 * totals, `duplicate_attempts` against the attempts sent, the DLQ against the malformed messages, and
 * nothing left in the queue.
 */
export async function exactnessNotes(
  db: { sql: postgres.Sql },
  queue: TestQueue,
  votes: GeneratedVotes,
): Promise<string[]> {
  const notes: string[] = [];
  const actual = await results(db.sql);
  const expected = expectedResults(votes);
  if (!isDeepStrictEqual(actual, expected)) {
    notes.push(`vote_results ${JSON.stringify(actual)} but expected ${JSON.stringify(expected)}`);
  }
  const [{ duplicates }] = await db.sql`select count(*)::int as duplicates from duplicate_attempts`;
  if (duplicates !== votes.duplicates) {
    notes.push(`duplicate_attempts has ${duplicates} rows, ${votes.duplicates} sent`);
  }
  const deadLettered = await queue.count(queue.dlq);
  if (deadLettered !== votes.malformed) notes.push(`the DLQ holds ${deadLettered} messages, ${votes.malformed} sent`);
  const left = await queue.count();
  if (left !== 0) notes.push(`${left} messages left unacknowledged in the queue`);
  return notes;
}

/**
 * Polls `vote_results` every `intervalMs` until every valid vote of `votes` is visible, calling `look` with
 * what is visible after each poll (progress lines, samples); fails, with the end of its output, when one of
 * `services` exits first.
 */
export async function untilAllVisible(
  db: { sql: postgres.Sql },
  votes: GeneratedVotes,
  services: readonly ServiceProcess[],
  signal: AbortSignal,
  look: (visible: number) => void | Promise<void>,
  intervalMs = 20,
): Promise<void> {
  for (;;) {
    signal.throwIfAborted();
    const visible = await visibleVotes(db.sql);
    await look(visible);
    if (visible >= votes.valid) return;
    const exited = services.find((service) => service.exitCode !== undefined);
    if (exited) {
      throw new Error(
        `the service exited with ${exited.exitCode} before counting every vote:\n${exited.output().slice(-4000)}`,
      );
    }
    await sleep(intervalMs, signal);
  }
}

/**
 * Stops `services` (SIGTERM, each given {@link SHUTDOWN_GRACE_MS}), then what is not exact: the
 * {@link exactnessNotes} of the drain of `votes`, and every exit other than 0 with the end of its output.
 */
export async function stopAndCheck(
  services: readonly ServiceProcess[],
  db: { sql: postgres.Sql },
  queue: TestQueue,
  votes: GeneratedVotes,
): Promise<string[]> {
  const codes = await Promise.all(services.map((service) => service.stopWithin(SHUTDOWN_GRACE_MS)));
  const notes = await exactnessNotes(db, queue, votes);
  codes.forEach((code, i) => {
    if (code !== 0) notes.push(`exit code ${code} after SIGTERM:\n${services[i].output().slice(-4000)}`);
  });
  return notes;
}

/**
 * The row of a drain of `n` messages in `seconds`: `fields` (the phase's own figures and notes), exact when
 * `failures` (what {@link stopAndCheck} and the phase found not exact) is empty, which then follow its notes.
 */
export function drainRow(
  label: string,
  n: number,
  seconds: number,
  failures: readonly string[],
  fields: Omit<Row, "phase" | "n" | "seconds" | "rate" | "exact">,
): Row {
  return {
    phase: label,
    n,
    seconds,
    rate: n / seconds,
    ...fields,
    exact: failures.length === 0,
    notes: [...fields.notes, ...failures],
  };
}
