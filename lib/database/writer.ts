/**
 * Writing: commits a batch of votes so that each distinct vote is counted
 * exactly once, however often it is delivered. It owns the policy around the
 * statements: retries of a transient failure (bounded, timed out per attempt),
 * isolating a vote the database refuses by splitting the batch, and telling
 * what a timed-out attempt committed after all. The statements themselves are
 * in `lib/database/sql/`: {@link ./sql/count_votes.ts} counts the batch as one
 * transaction; only when some vote was not counted does
 * {@link ./sql/record_duplicates.ts} look at why (a redelivery does nothing, a
 * different vote with the same hash is recorded once in `duplicate_attempts`).
 * Both are idempotent, so retrying after an ambiguous failure, or a crash
 * between them, counts nothing twice.
 *
 * @example
 * ```ts
 * import { VoteWriter } from "./writer.ts";
 * const writer = new VoteWriter(sql, { maxRetryAttempts: 3, retryDelayMs: 1000 });
 * const result = await writer.commit(votes);
 * console.log(result.counted, result.duplicates, result.redelivered);
 * ```
 *
 * @module
 */

import type { Sql } from "./pool.ts";
import { isDataError } from "./pool.ts";
import { retry, RetryError } from "../retry.ts";
import { TimeoutError, withTimeout } from "../timeout.ts";
import { countVotes, type LawTotals } from "./sql/count_votes.ts";
import { recordDuplicates } from "./sql/record_duplicates.ts";
import type { Vote } from "../vote.ts";
import type { StandbyWaiter } from "./standbys.ts";

export type { LawTotals };

/** What one {@link VoteWriter.commit} did. */
export interface CommitResult {
  /** Votes newly counted. */
  counted: number;
  /** Votes whose hash was counted before with other content: recorded, not counted. */
  duplicates: number;
  /** Copies of votes already counted (redeliveries), and duplicate attempts already recorded. */
  redelivered: number;
  /** Per law touched: totals after the commit. */
  laws: LawTotals[];
  /** Votes the database refuses (index into the input, and its message); not counted, to be dead-lettered. */
  rejected: { index: number; detail: string }[];
  /** Transactions it took (more than one when a refused vote had to be isolated). */
  transactions: number;
  /** The server that committed it (`CountedVotes.server`); undefined when no transaction ran. */
  server?: string;
}

/** What one transaction of a {@link VoteWriter.commit} did. */
export type CommitPart = Pick<CommitResult, "counted" | "duplicates" | "redelivered" | "laws" | "server">;

/** Options of {@link VoteWriter}. */
export interface VoteWriterOptions {
  /** Attempts of a transaction that fails for a transient reason. @default 3 */
  maxRetryAttempts?: number;
  /** First delay between attempts in ms; doubles each attempt. @default 1000 */
  retryDelayMs?: number;
  /**
   * Longest one transaction may go unanswered before the attempt counts as failed (a network partition
   * would otherwise hang it forever, and the retry budget would never apply). @default 30000
   */
  commitTimeoutMs?: number;
  /** Written to `aggregation_stats.instance` and `vote_ledger.instance`. */
  instance?: string;
  /** Append each batch to the batch ledger. @default true (false only for the benchmark's comparison) */
  ledger?: boolean;
  /**
   * With `POSTGRES_MIN_STANDBYS`: a commit is reported only once enough standbys flushed it
   * (`./standbys.ts`); a wait that fails throws, and the batch is committed again.
   */
  standbys?: Pick<StandbyWaiter, "flushed">;
  /** Called before each retry, for logs and metrics. */
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  /**
   * Told what an attempt that timed out committed after all (its retry then finds those votes stored and
   * reports them as redelivered), so that counters follow what the database committed.
   */
  onLateCommit?: (part: CommitPart) => void;
}

/** The database kept failing for `maxRetryAttempts` attempts; `cause` is the last error. */
export { RetryError };

/** Commits batches of votes; see the module documentation for the guarantees. */
export class VoteWriter {
  readonly #sql: Sql;
  readonly #maxRetryAttempts: number;
  readonly #retryDelayMs: number;
  readonly #commitTimeoutMs: number;
  readonly #instance: string;
  readonly #ledger: boolean;
  readonly #onRetry: VoteWriterOptions["onRetry"];
  readonly #onLateCommit: VoteWriterOptions["onLateCommit"];
  readonly #standbys: VoteWriterOptions["standbys"];

  constructor(sql: Sql, options: VoteWriterOptions = {}) {
    this.#sql = sql;
    this.#maxRetryAttempts = options.maxRetryAttempts ?? 3;
    this.#retryDelayMs = options.retryDelayMs ?? 1000;
    this.#commitTimeoutMs = options.commitTimeoutMs ?? 30_000;
    this.#instance = options.instance ?? `pid-${Deno.pid}`;
    this.#ledger = options.ledger ?? true;
    this.#onRetry = options.onRetry;
    this.#onLateCommit = options.onLateCommit;
    this.#standbys = options.standbys;
  }

  /**
   * Commits `votes`. A vote the database refuses (a data error) is isolated by
   * splitting the batch and reported in `rejected`; the others are committed.
   *
   * @param votes the batch, in delivery order
   * @param batchAgeMs milliseconds since the batch's first message, for `aggregation_stats`
   * @throws {RetryError} when a transient error outlasts the retry budget: nothing in this call
   *   that is not reported as committed may be acknowledged
   * @throws {StandbyWaitError} when the wait for standbys failed: nothing may be acknowledged, commit again
   */
  async commit(votes: Vote[], batchAgeMs = 0): Promise<CommitResult> {
    const result: CommitResult = {
      counted: 0,
      duplicates: 0,
      redelivered: 0,
      laws: [],
      rejected: [],
      transactions: 0,
    };
    if (votes.length > 0) await this.#commitIsolating(votes, 0, batchAgeMs, result);
    if (this.#standbys !== undefined && result.server !== undefined) await this.#standbys.flushed(result.server);
    return result;
  }

  async #commitIsolating(
    votes: Vote[],
    offset: number,
    batchAgeMs: number,
    result: CommitResult,
  ): Promise<void> {
    try {
      const part = await this.#withRetry(() => this.#commitOnce(votes, batchAgeMs));
      result.transactions += 1;
      result.counted += part.counted;
      result.duplicates += part.duplicates;
      result.redelivered += part.redelivered;
      result.laws.push(...part.laws);
      // Transactions on two servers (a failover between the parts) match no poll: the wait fails, all is redone.
      result.server = result.server === undefined || result.server === part.server ? part.server : "several";
    } catch (error) {
      if (!isDataError(error)) throw error;
      result.transactions += 1;
      if (votes.length === 1) {
        result.rejected.push({ index: offset, detail: (error as Error).message });
        return;
      }
      const half = Math.ceil(votes.length / 2);
      await this.#commitIsolating(votes.slice(0, half), offset, batchAgeMs, result);
      await this.#commitIsolating(votes.slice(half), offset + half, batchAgeMs, result);
    }
  }

  #withRetry(attempt: () => Promise<CommitPart>): Promise<CommitPart> {
    // On timeout the transaction may still commit later: the statements are idempotent, so the retry counts
    // nothing twice, and what the late one counted is told to onLateCommit.
    const timed = () => {
      const running = attempt();
      return withTimeout(
        running,
        this.#commitTimeoutMs,
        `no answer from the database within ${this.#commitTimeoutMs} ms`,
      )
        .catch((error) => {
          if (error instanceof TimeoutError) running.then((late) => this.#onLateCommit?.(late), () => {});
          throw error;
        });
    };
    return retry(timed, {
      maxAttempts: this.#maxRetryAttempts,
      minDelayMs: this.#retryDelayMs,
      maxDelayMs: Infinity,
      shouldRetry: (error) => !isDataError(error),
      onRetry: this.#onRetry,
    });
  }

  async #commitOnce(votes: Vote[], batchAgeMs: number): Promise<CommitPart> {
    const { laws, skipped, server } = await countVotes(this.#sql, votes, {
      batchAgeMs,
      instance: this.#instance,
      ledger: this.#ledger,
    });
    const duplicates = skipped.length === 0
      ? 0
      : await recordDuplicates(this.#sql, skipped.map((ord) => votes[ord - 1]));
    return {
      counted: votes.length - skipped.length,
      duplicates,
      redelivered: skipped.length - duplicates,
      laws,
      server,
    };
  }
}
