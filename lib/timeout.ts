/**
 * Timers: a deadline on a promise, a pause, and a bounded closing step. Shared by
 * the writer (commit timeout, retry backoff), the aggregator (backoff while the
 * database is down, shutdown deadline) and the stops of the counting service and
 * of a results-only instance.
 *
 * @example
 * ```ts
 * import { delay, withTimeout } from "./timeout.ts";
 * await withTimeout(fetch("http://127.0.0.1:8001/healthz"), 2000, "no answer from /healthz");
 * await delay(100);
 * ```
 *
 * @module
 */

import { getLogger } from "./log.ts";

/** Longest wait for each closing step of a stop (broker, pool, HTTP server), so that a silent peer cannot hold it. */
export const CLOSE_TIMEOUT_MS = 5000;

/** A promise given to {@link withTimeout} did not settle in time. */
export class TimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TimeoutError";
  }
}

/**
 * `promise`, or a {@link TimeoutError} with `message` after `ms` milliseconds.
 * The promise itself goes on: only the wait for it ends.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Waits for a closing step at most {@link CLOSE_TIMEOUT_MS}; a step that fails or hangs is logged (`what` says
 * which) and left behind, so that the rest of the stop goes on.
 */
export async function bounded(step: Promise<unknown>, what: string): Promise<void> {
  try {
    await withTimeout(step, CLOSE_TIMEOUT_MS, `timed out after ${CLOSE_TIMEOUT_MS} ms ${what}`);
  } catch (error) {
    getLogger("service").warn("Stopping: {error}", { error: (error as Error).message });
  }
}

/** Resolves after `ms` milliseconds, or as soon as `signal` aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
