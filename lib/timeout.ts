/**
 * Timers: a deadline on a promise, and a pause. Shared by the writer (commit
 * timeout, retry backoff) and the aggregator (backoff while the database is down,
 * shutdown deadline).
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
