/**
 * The counting statement: one batch of votes counted exactly once, as one
 * transaction. A vote is counted when its `vote_audit` row has status
 * `aggregated`, which the database keeps unique per hash
 * (`vote_audit_counted_key`): a row the validation worker wrote first (status
 * `validated`) is moved to `aggregated`, otherwise an `aggregated` row is
 * inserted (the first copy in the batch wins). Only the votes it counted are
 * added to `vote_results` (law ids in sorted order, so concurrent instances
 * never deadlock), and one `aggregation_stats` row is written. It says which
 * votes it did not count; why (a redelivery, or a duplicate attempt) is
 * {@link ./record_duplicates.ts}'s question. Retrying it after an ambiguous
 * failure counts nothing twice. A batch that counted votes tags their audit rows
 * with its batch id and appends its row to the batch ledger
 * ({@link ./append_ledger.ts}), in the same statement. Each changed law's
 * `version` goes up by one and the changes are notified on
 * `vote_results_changed` for the live results (delivered on commit only).
 *
 * @module
 */

import type { Sql } from "../pool.ts";
import type { Vote } from "../../vote.ts";
import { NOTIFY_CHUNK_LAWS, RESULTS_CHANNEL } from "../../results/store.ts";
import { appendLedger, newBatchId } from "./append_ledger.ts";
import { toColumns } from "./vote_columns.ts";

/** A law's totals after a commit, and what this commit added. */
export interface LawTotals {
  lawId: string;
  ouiCount: number;
  nonCount: number;
  ouiAdded: number;
  nonAdded: number;
}

/** What {@link countVotes} did. */
export interface CountedVotes {
  /** Per law touched: totals after the statement, in law id order. */
  laws: LawTotals[];
  /** Positions (1-based) of the votes not counted: later copies in the batch, or hashes counted before. */
  skipped: number[];
  /** The batch's `vote_ledger.seq`; null when it counted nothing (or the ledger was left alone). */
  ledgerSeq: number | null;
  /**
   * The server that committed it, as `pg_postmaster_start_time()`: a standby promoted since, or the same
   * server restarted, answers another (`../standbys.ts` waits for standbys of this one only).
   */
  server: string;
}

/** What {@link countVotes} writes to `aggregation_stats`. */
export interface CountStats {
  /** Milliseconds since the batch's first message. */
  batchAgeMs: number;
  /** `aggregation_stats.instance`. */
  instance: string;
  /** Append to the batch ledger. @default true (false only for the benchmark's comparison) */
  ledger?: boolean;
}

interface LawRow {
  law_id: string;
  oui_count: number;
  non_count: number;
  oui_added: number;
  non_added: number;
}

/**
 * Counts `votes` (non-empty, in delivery order) in one statement.
 *
 * @throws a data error (see `isDataError`) when the database refuses one of the votes: nothing is counted
 */
export async function countVotes(
  sql: Sql,
  votes: Vote[],
  { batchAgeMs, instance, ledger }: CountStats,
): Promise<CountedVotes> {
  const columns = toColumns(votes);
  // One id per attempt: a retry after a late commit counts nothing, so appends nothing.
  const batchId = newBatchId();
  const tag = ledger === false ? null : batchId;
  const [{ laws, skipped, ledger_seq, server }] = await sql<
    { laws: LawRow[]; skipped: number[]; ledger_seq: string | null; server: string }[]
  >`
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
    -- Locked in hash order (firsts is in hash order; concurrent instances never deadlock); one locked by
    -- an instance that counted it meanwhile is re-read as 'aggregated' and drops out. Every step below
    -- finds vote_audit rows by one index probe per vote (lateral) or by their ctid, whatever the
    -- planner's statistics say of the table: joins let a stale estimate pick a scan of every
    -- 'validated' or 'aggregated' row, on every batch.
    locked as (
      select a.ctid as row_id, a.id, a.vote_hash, f.citizen_id, f.choice, f.ts
      from firsts f
      cross join lateral (
        select a.ctid, a.id, a.vote_hash from vote_audit a
        where a.vote_hash = f.vote_hash and a.status = 'validated'
          and a.law_id = f.law_id and coalesce(a.vote, a.choice) = f.choice
        order by a.id
        for update
      ) a
    ),
    waiting as (
      select distinct on (l.vote_hash) l.*
      from locked l
      left join lateral (
        select true as found from vote_audit c where c.vote_hash = l.vote_hash and c.status = 'aggregated' limit 1
      ) c on true
      where c.found is null
      order by l.vote_hash, l.id
    ),
    -- By ctid: the rows are locked by this statement, so their ctid stands.
    adopted as (
      update vote_audit a
      set status = 'aggregated', "timestamp" = w.ts, citizen_id = w.citizen_id, batch_id = ${tag}::uuid
      from waiting w
      where a.ctid = w.row_id and a.id = w.id and a.status = 'validated'
      returning a.vote_hash, a.law_id, w.choice
    ),
    -- Counted once per hash: vote_audit_counted_key is unique over the 'aggregated' rows. A vote not
    -- adopted (no row of the worker's, or one changed meanwhile) gets a row of its own.
    inserted as (
      insert into vote_audit (vote_hash, citizen_id, law_id, vote, choice, status, "timestamp", batch_id)
      select vote_hash, citizen_id, law_id, choice, choice, 'aggregated', ts, ${tag}::uuid from firsts f
      where not exists (select 1 from adopted d where d.vote_hash = f.vote_hash)
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
      insert into vote_results as r (law_id, oui_count, non_count, total_votes, version)
      select law_id, oui, non, oui + non, 1 from increments order by law_id
      on conflict (law_id) do update
        set oui_count = r.oui_count + excluded.oui_count,
            non_count = r.non_count + excluded.non_count,
            total_votes = r.total_votes + excluded.total_votes,
            version = r.version + 1
      returning law_id, oui_count, non_count, version
    ),
    -- Live results (lib/results/): the changed laws' ids and versions, queued now, delivered to
    -- listeners when (and only if) this transaction commits. Chunked under the 8,000-byte limit.
    notified as (
      select pg_notify(${RESULTS_CHANNEL}, json_agg(json_build_array(law_id, version) order by law_id)::text)
      from (select law_id, version, (row_number() over (order by law_id) - 1) / ${NOTIFY_CHUNK_LAWS}::int as chunk
            from upserted) u
      group by chunk
    ),
    stats as (
      -- This service's columns and the seed aggregator's.
      insert into aggregation_stats (batch_size, votes_counted, processing_time_ms, instance,
                                     votes_processed, processing_duration_ms)
      select ${votes.length}, n, ${batchAgeMs}, ${instance}, n, ${Math.round(batchAgeMs)}
      from (select count(*) as n from counted) c
    ),
    ${appendLedger(sql, { batchId, instance, enabled: ledger })}
    select
      (select seq from ledger_row) as ledger_seq,
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
      ), '{}') as skipped,
      (select count(*) from notified) as notifications,
      pg_postmaster_start_time()::text as server`;
  return {
    laws: laws.map((r) => ({
      lawId: r.law_id,
      ouiCount: Number(r.oui_count),
      nonCount: Number(r.non_count),
      ouiAdded: r.oui_added,
      nonAdded: r.non_added,
    })),
    skipped,
    ledgerSeq: ledger_seq === null ? null : Number(ledger_seq),
    server,
  };
}
