/**
 * Database outages: what happens while a batch cannot be committed.
 *
 * The writer retries one transaction a few times (`MAX_RETRY_ATTEMPTS`). When
 * that budget runs out, the batch is not given up: consumption pauses (the
 * batch and everything behind it stay unacknowledged, so nothing is lost and
 * memory stays bounded by the prefetch), and the commit is retried with the
 * same backoff policy, capped at 3 s (`RECONNECT_BACKOFF`, `../retry.ts`), until
 * the database answers; then consumption resumes. When the database probe sees the server answer again
 * ({@link OutageGuard.serverAnswers}), the wait under way ends and the commit is tried at once. Only a drain that outlived its deadline
 * abandons the batch, unacknowledged, to be redelivered.
 *
 * A server that answers read-only (a standby, a demoted primary: SQLSTATE 25006) is such an outage, not
 * refused data: nothing is dead-lettered, and counting resumes once a server that takes writes answers.
 *
 * Several batches may be failing at once (`MAX_INFLIGHT_BATCHES` > 1): the
 * database counts as down from the first failure to the last recovery.
 *
 * @module
 */

import { getLogger } from "../log.ts";
import { AbortedError, RECONNECT_BACKOFF, retry, RetryError } from "../retry.ts";
import type { Vote } from "../vote.ts";
import type { CommitResult } from "../database/writer.ts";
import { isReadOnly } from "../database/pool.ts";
import { StandbyWaitError } from "../database/standbys.ts";

const log = getLogger("aggregator");

/** What the outage loop needs of the writer (implemented by `VoteWriter`). */
export interface Writer {
  commit(votes: Vote[], batchAgeMs: number): Promise<CommitResult>;
}

/** A batch's committed transaction. */
export interface Committed {
  result: CommitResult;
  /** Seconds the successful attempt took. */
  seconds: number;
  /** Calls of the writer it took (each one up to `MAX_RETRY_ATTEMPTS` transactions): 1 unless the database was down. */
  attempts: number;
}

/** Options of {@link OutageGuard}. */
export interface OutageGuardOptions {
  writer: Writer;
  /** First delay between commit attempts while the database is down (ms); doubles up to 3 s. @default 1000 */
  retryDelayMs?: number;
  /** Told when the first failing batch starts failing, and when the last one recovers. */
  onDatabaseChange: (down: boolean) => void;
  /** Told of every failed attempt (for `aggregation_errors_total`). */
  onFailedAttempt: () => void;
  /** True once a timed-out drain gave up: commits still retrying stop. */
  abandoned: () => boolean;
}

/** Commits batches through outages; see the module documentation. */
export class OutageGuard {
  readonly #options: OutageGuardOptions;
  #failing = 0;
  #lastError: unknown;
  #wake = new AbortController();

  constructor(options: OutageGuardOptions) {
    this.#options = options;
  }

  /** Why commits fail, while they do: the last error, said as what it means for the service. */
  get reason(): string | undefined {
    if (this.#failing === 0) return undefined;
    const error = this.#lastError instanceof RetryError ? this.#lastError.cause : this.#lastError;
    if (isReadOnly(error)) {
      return "the server is read-only (a standby, or a demoted primary): waiting for one that takes writes";
    }
    return `commits fail past the retry budget (${(error as Error)?.message ?? error})`;
  }

  /** The database answers again (its probe says so): every commit waiting out a backoff is tried at once. */
  serverAnswers(): void {
    this.#wake.abort();
    this.#wake = new AbortController();
  }

  /** True while some batch cannot be committed. */
  get failing(): boolean {
    return this.#failing > 0;
  }

  /**
   * Commits `votes`, retrying for as long as it takes.
   *
   * @param openedAt `performance.now()` when the batch's first message arrived
   * @returns the result, or `undefined` when a timed-out drain abandoned it
   */
  async commit(votes: Vote[], openedAt: number): Promise<Committed | undefined> {
    let failing = false;
    let attempts = 0;
    const attempt = async () => {
      attempts += 1;
      const start = performance.now();
      const result = await this.#options.writer.commit(votes, start - openedAt);
      return { result, seconds: (performance.now() - start) / 1000, attempts };
    };
    const minDelayMs = Math.max(1, this.#options.retryDelayMs ?? 1000);
    try {
      return await retry(attempt, {
        maxAttempts: Infinity,
        minDelayMs,
        maxDelayMs: Math.max(minDelayMs, RECONNECT_BACKOFF.maxDelayMs),
        jitter: RECONNECT_BACKOFF.jitter,
        aborted: this.#options.abandoned,
        wake: () => this.#wake.signal,
        onRetry: (error) => {
          this.#lastError = error;
          this.#options.onFailedAttempt();
          if (!(error instanceof RetryError || error instanceof StandbyWaitError)) {
            log.error("Unexpected error committing a batch: {error}", { error });
          }
          if (failing) return;
          failing = true;
          if (this.#failing++ === 0) this.#options.onDatabaseChange(true);
          log.error(
            "Cannot commit a batch of {count} votes ({error}); consumption paused, nothing acknowledged, retrying",
            { count: votes.length, error: (error as Error).message },
          );
        },
      });
    } catch (error) {
      if (error instanceof AbortedError) return undefined;
      throw error;
    } finally {
      // An abandoned batch leaves the database counted as down: nothing says it came back.
      if (failing && --this.#failing === 0 && !this.#options.abandoned()) {
        log.info("The database is back; consuming again");
        this.#options.onDatabaseChange(false);
      }
    }
  }
}
