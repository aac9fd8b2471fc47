/**
 * Writing: commits a batch of votes so that each distinct vote is counted
 * exactly once, however often it is delivered.
 *
 * One statement does the counting, as one transaction. A vote is counted when
 * its `vote_audit` row has status `aggregated`, and the database keeps that
 * unique per hash (`vote_audit_counted_key`): when the validation worker wrote
 * the row (status `validated`) before publishing the vote, the statement moves
 * that row to `aggregated`; otherwise it inserts an `aggregated` row (first one
 * wins). It adds only the votes it counted to `vote_results` (law ids in sorted
 * order, so concurrent instances never deadlock; `total_votes` with them), and
 * writes one `aggregation_stats` row. Only when some vote was not counted does
 * a second statement look at why: a copy identical to the counted vote is a
 * redelivery and does nothing; a different vote with the same hash is recorded
 * once in `duplicate_attempts`. Both statements are idempotent, so retrying
 * after an ambiguous failure, or a crash between them, counts nothing twice.
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

import type { Sql } from "./database.ts";
import { isDataError } from "./database.ts";
import { retry, RetryError } from "./retry.ts";
import { TimeoutError, withTimeout } from "./timeout.ts";
import type { Choice, Vote } from "./vote.ts";

/** A law's totals after a commit, and what this commit added. */
export interface LawTotals {
  lawId: string;
  ouiCount: number;
  nonCount: number;
  ouiAdded: number;
  nonAdded: number;
}

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
}

/** What one transaction of a {@link VoteWriter.commit} did. */
export type CommitPart = Pick<CommitResult, "counted" | "duplicates" | "redelivered" | "laws">;

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
  /** Written to `aggregation_stats.instance`. */
  instance?: string;
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
  readonly #onRetry: VoteWriterOptions["onRetry"];
  readonly #onLateCommit: VoteWriterOptions["onLateCommit"];

  constructor(sql: Sql, options: VoteWriterOptions = {}) {
    this.#sql = sql;
    this.#maxRetryAttempts = options.maxRetryAttempts ?? 3;
    this.#retryDelayMs = options.retryDelayMs ?? 1000;
    this.#commitTimeoutMs = options.commitTimeoutMs ?? 30_000;
    this.#instance = options.instance ?? `pid-${Deno.pid}`;
    this.#onRetry = options.onRetry;
    this.#onLateCommit = options.onLateCommit;
  }

  /**
   * Commits `votes`. A vote the database refuses (a data error) is isolated by
   * splitting the batch and reported in `rejected`; the others are committed.
   *
   * @param votes the batch, in delivery order
   * @param batchAgeMs milliseconds since the batch's first message, for `aggregation_stats`
   * @throws {RetryError} when a transient error outlasts the retry budget: nothing in this call
   *   that is not reported as committed may be acknowledged
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
    const sql = this.#sql;
    const columns = toColumns(votes);
    const [{ laws: lawRows, skipped }] = await sql<{ laws: LawRow[]; skipped: number[] }[]>`
      with batch as (
        select * from unnest(
          ${sql.array(columns.hash)}::text[], ${sql.array(columns.citizenId)}::text[],
          ${sql.array(columns.lawId)}::text[], ${sql.array(columns.choice)}::text[],
          ${sql.array(columns.timestamp)}::timestamptz[]
        ) with ordinality as b(vote_hash, citizen_id, law_id, choice, ts, ord)
      ),
      firsts as (
        select distinct on (vote_hash) * from batch order by vote_hash, ord
      ),
      -- Rows the validation worker wrote before publishing the vote: counting moves one to 'aggregated'.
      -- Locked in hash order (concurrent instances never deadlock); one locked by an instance that
      -- counted it meanwhile is re-read as 'aggregated' and drops out.
      locked as (
        select a.id, a.vote_hash, f.citizen_id, f.choice, f.ts
        from firsts f
        join vote_audit a on a.vote_hash = f.vote_hash and a.status = 'validated'
          and a.law_id = f.law_id and coalesce(a.vote, a.choice) = f.choice
        order by a.vote_hash, a.id
        for update of a
      ),
      waiting as (
        select distinct on (l.vote_hash) l.*
        from locked l
        where not exists (select 1 from vote_audit c where c.vote_hash = l.vote_hash and c.status = 'aggregated')
        order by l.vote_hash, l.id
      ),
      adopted as (
        update vote_audit a
        set status = 'aggregated', "timestamp" = w.ts, citizen_id = w.citizen_id
        from waiting w
        where a.vote_hash = w.vote_hash and a.status = 'validated' and a.id = w.id
        returning a.vote_hash, a.law_id, w.choice
      ),
      -- Counted once per hash: vote_audit_counted_key is unique over the 'aggregated' rows.
      inserted as (
        insert into vote_audit (vote_hash, citizen_id, law_id, vote, choice, status, "timestamp")
        select vote_hash, citizen_id, law_id, choice, choice, 'aggregated', ts from firsts f
        where not exists (select 1 from waiting w where w.vote_hash = f.vote_hash)
        order by vote_hash
        on conflict (vote_hash) where status = 'aggregated' do nothing
        returning vote_hash, law_id, choice
      ),
      counted as (
        select vote_hash, law_id, choice from inserted
        union all
        select vote_hash, law_id, choice from adopted
      ),
      increments as (
        select law_id,
               count(*) filter (where choice = 'oui') as oui,
               count(*) filter (where choice = 'non') as non
        from counted group by law_id
      ),
      upserted as (
        insert into vote_results as r (law_id, oui_count, non_count, total_votes)
        select law_id, oui, non, oui + non from increments order by law_id
        on conflict (law_id) do update
          set oui_count = r.oui_count + excluded.oui_count,
              non_count = r.non_count + excluded.non_count,
              total_votes = r.total_votes + excluded.total_votes
        returning law_id, oui_count, non_count
      ),
      stats as (
        -- This service's columns and the seed aggregator's.
        insert into aggregation_stats (batch_size, votes_counted, processing_time_ms, instance,
                                       votes_processed, processing_duration_ms)
        select ${votes.length}, n, ${batchAgeMs}, ${this.#instance}, n, ${Math.round(batchAgeMs)}
        from (select count(*) as n from counted) c
      )
      select
        coalesce((
          select json_agg(json_build_object(
                   'law_id', u.law_id, 'oui_count', u.oui_count, 'non_count', u.non_count,
                   'oui_added', i.oui, 'non_added', i.non) order by u.law_id)
          from upserted u join increments i using (law_id)
        ), '[]') as laws,
        -- Positions (1-based) of the votes not inserted: later copies, or hashes already stored.
        coalesce((
          select array_agg(b.ord::int order by b.ord) from batch b
          where not exists (select 1 from firsts f join counted c using (vote_hash) where f.ord = b.ord)
        ), '{}') as skipped`;

    const laws: LawTotals[] = lawRows.map((r) => ({
      lawId: r.law_id,
      ouiCount: Number(r.oui_count),
      nonCount: Number(r.non_count),
      ouiAdded: r.oui_added,
      nonAdded: r.non_added,
    }));
    const counted = votes.length - skipped.length;
    let duplicates = 0;
    if (skipped.length > 0) {
      // Only the votes not inserted: redeliveries (same content as the stored vote: nothing to do), or
      // different votes reusing a hash (duplicate attempts, recorded once).
      const rest = toColumns(skipped.map((ord) => votes[ord - 1]));
      const recorded = await sql`
        insert into duplicate_attempts (vote_hash, citizen_id, law_id, choice, attempt_timestamp)
        select b.vote_hash, b.citizen_id, b.law_id, b.choice, b.ts
        from unnest(
          ${sql.array(rest.hash)}::text[], ${sql.array(rest.citizenId)}::text[],
          ${sql.array(rest.lawId)}::text[], ${sql.array(rest.choice)}::text[],
          ${sql.array(rest.timestamp)}::timestamptz[]
        ) as b(vote_hash, citizen_id, law_id, choice, ts)
        join vote_audit a on a.vote_hash = b.vote_hash and a.status = 'aggregated'
        where (a.law_id, coalesce(a.vote, a.choice), a."timestamp", a.citizen_id)
              is distinct from (b.law_id, b.choice, b.ts, b.citizen_id)
        order by b.vote_hash
        on conflict (vote_hash, law_id, choice, attempt_timestamp, citizen_id) where detected_at is not null
        do nothing
        returning 1`;
      duplicates = recorded.count;
    }
    return { counted, duplicates, redelivered: skipped.length - duplicates, laws };
  }
}

interface LawRow {
  law_id: string;
  oui_count: number;
  non_count: number;
  oui_added: number;
  non_added: number;
}

interface Columns {
  hash: string[];
  citizenId: (string | null)[];
  lawId: string[];
  choice: Choice[];
  timestamp: (string | null)[];
}

/** Votes as column arrays: one array parameter per column, the whole batch in one statement. */
function toColumns(votes: Vote[]): Columns {
  const columns: Columns = { hash: [], citizenId: [], lawId: [], choice: [], timestamp: [] };
  for (const vote of votes) {
    columns.hash.push(vote.hash);
    columns.citizenId.push(vote.citizenId);
    columns.lawId.push(vote.lawId);
    columns.choice.push(vote.choice);
    columns.timestamp.push(vote.timestamp);
  }
  return columns;
}
