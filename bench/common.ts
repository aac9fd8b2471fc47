/**
 * What the phases share: the options, the service's environment for a phase,
 * preloading a queue, and reading what the service made visible.
 *
 * @module
 */

import type postgres from "postgres";
import { RABBITMQ_URL, type TestQueue } from "../tests/support/servers.ts";
import { freePort } from "../tests/support/service.ts";
import { type GeneratedVotes, publishVotes } from "../tools/publish.ts";
import { progress, say } from "./report.ts";

/** The benchmark's options (see `USAGE` in main.ts). */
export interface Options {
  n: number;
  rate: number;
  seconds: number;
  timeouts: string[];
  backlog: number;
  laws: number;
  batchSize: number;
  prefetch: number;
  inflight: number;
  skipCeiling: boolean;
  skipDrain: boolean;
  skipLatency: boolean;
  /** Results stream subscribers of the subscribers phase; 0 skips it. */
  subscribers: number;
  phaseTimeoutMs: number;
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

/** Votes counted in `vote_results`; 0 before the service created the table. */
export async function visibleVotes(sql: postgres.Sql): Promise<number> {
  try {
    const [{ n }] = await sql`select coalesce(sum(oui_count + non_count), 0)::int8 as n from vote_results`;
    return Number(n);
  } catch (error) {
    if ((error as { code?: string }).code === "42P01") return 0;
    throw error;
  }
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
    ...extra,
  };
}

/** The generator's expected totals in the shape of the tests' `results()`: `{law: [oui, non]}`. */
export function expectedResults(votes: GeneratedVotes): Record<string, [number, number]> {
  return Object.fromEntries(Object.entries(votes.expected).map(([law, t]) => [law, [t.oui, t.non]]));
}
