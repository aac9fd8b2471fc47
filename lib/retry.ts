/**
 * Retrying: one backoff policy for every loop that waits for the database to
 * come back — the writer's bounded attempts at one transaction, and the
 * pipeline's unbounded wait while the database is down (`pipeline/outage.ts`).
 *
 * It owns the delays and the attempt count; what counts as retryable, and what
 * to do between attempts, belongs to the caller (`shouldRetry`, `onRetry`).
 *
 * @example
 * ```ts
 * import { retry } from "./retry.ts";
 * const rows = await retry(() => sql`select 1`, { maxAttempts: 3, minDelayMs: 1000 });
 * ```
 *
 * @module
 */

import { delay } from "./timeout.ts";

/**
 * Backoff between attempts to reach a server that is down — at start-up, on a lost broker connection, and for a
 * commit through a database outage: 0.5 s doubling, half of it random, at most 3 s. The cap is low on purpose: it
 * is how long counting may lag behind the network's return, however long or often the server was away, and an
 * attempt at a server that is down costs one refused or timed-out connection. The random half spreads instances
 * that lost the server together.
 */
export const RECONNECT_BACKOFF = { minDelayMs: 500, multiplier: 2, maxDelayMs: 3000, jitter: 0.5 } as const;

/** Options of {@link retry} and {@link backoffDelay}. */
export interface RetryOptions {
  /** Attempts before giving up with a {@link RetryError}; `Infinity` never gives up. @default 3 */
  maxAttempts?: number;
  /** Delay after the first failed attempt, in ms. @default 1000 */
  minDelayMs?: number;
  /** Each delay is the previous one times this. @default 2 */
  multiplier?: number;
  /** Longest delay, in ms. @default 30000 */
  maxDelayMs?: number;
  /**
   * Fraction of each delay that is random (0 to 1), so that instances that failed together do not
   * retry together. @default 0
   */
  jitter?: number;
  /** Whether an error is worth another attempt; others are thrown at once. @default every error */
  shouldRetry?: (error: unknown) => boolean;
  /** Told before each wait, for logs and metrics. */
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  /** Checked before each attempt: once true, {@link retry} throws an {@link AbortedError}. */
  aborted?: () => boolean;
  /** Once aborted, the attempt under way and the wait are abandoned: {@link retry} throws an {@link AbortedError}. */
  signal?: AbortSignal;
  /**
   * Asked before each wait: once the signal it gives aborts, the wait ends and the next attempt starts at once
   * (a probe saw the server answer again, so waiting out the backoff would only delay the recovery).
   */
  wake?: () => AbortSignal;
}

/** The attempts ran out; `cause` is the last error. */
export class RetryError extends Error {
  /** Attempts made. */
  readonly attempts: number;
  constructor(attempts: number, cause: unknown) {
    super(`Gave up after ${attempts} attempt(s): ${(cause as Error)?.message ?? cause}`, { cause });
    this.name = "RetryError";
    this.attempts = attempts;
  }
}

/** {@link RetryOptions.aborted} or {@link RetryOptions.signal} said stop. */
export class AbortedError extends Error {
  constructor() {
    super("Retrying was abandoned");
    this.name = "AbortedError";
  }
}

/**
 * The delay after failed attempt number `attempt` (1-based).
 *
 * @throws {RangeError} when an option is out of range, naming it and its value
 */
export function backoffDelay(attempt: number, options: RetryOptions = {}, random = Math.random): number {
  const { minDelayMs = 1000, multiplier = 2, maxDelayMs = 30_000, jitter = 0 } = options;
  if (!(jitter >= 0 && jitter <= 1)) {
    throw new RangeError(`Cannot retry as 'jitter' must be from 0 to 1: current value is ${jitter}`);
  }
  const base = Math.min(maxDelayMs, minDelayMs * multiplier ** (attempt - 1));
  return base * (1 - jitter + jitter * random());
}

/**
 * Calls `attempt` until it resolves, waiting {@link backoffDelay} between failures.
 *
 * @throws {RetryError} after `maxAttempts` failures
 * @throws the error itself when `shouldRetry` refuses it
 * @throws {AbortedError} when `aborted` turns true
 */
export async function retry<T>(attempt: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const { maxAttempts = 3, shouldRetry = () => true } = options;
  if (!(maxAttempts >= 1)) {
    throw new RangeError(`Cannot retry as 'maxAttempts' must be at least 1: current value is ${maxAttempts}`);
  }
  const { signal } = options;
  for (let n = 1;; n++) {
    if (options.aborted?.() || signal?.aborted) throw new AbortedError();
    try {
      return await abortable(attempt(), signal);
    } catch (error) {
      if (error instanceof AbortedError || !shouldRetry(error)) throw error;
      if (n >= maxAttempts) throw new RetryError(n, error);
      const ms = backoffDelay(n, options);
      options.onRetry?.(error, n, ms);
      const wake = options.wake?.();
      await delay(ms, wake && signal ? AbortSignal.any([signal, wake]) : wake ?? signal);
    }
  }
}

/**
 * `promise`, or an {@link AbortedError} as soon as `signal` aborts (at once if it already has). The
 * promise itself goes on: only the wait for it ends.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(new AbortedError());
  }
  let onAbort = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new AbortedError());
    signal.addEventListener("abort", onAbort, { once: true });
  });
  promise.catch(() => {});
  return Promise.race([promise, aborted]).finally(() => signal.removeEventListener("abort", onAbort));
}
