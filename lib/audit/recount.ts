/**
 * The recount: every law's totals recomputed from the audit trail (the
 * `vote_audit` rows with status `aggregated`, the votes the service counted),
 * side by side with what `vote_results` stores. One pass over the audit table
 * (a hash aggregate): linear in its rows. It also says, per law, how many
 * counted votes belong to no batch of the ledger: counted before migration 004
 * (`batch_id` empty), or tagged with a batch the ledger does not hold.
 *
 * It does not replay the ledger's chain ({@link ./chain.ts}).
 *
 * @module
 */

import type postgres from "postgres";

/** A transaction (verify's snapshot). */
type Sql = postgres.TransactionSql;

/** One law: stored and recounted totals. */
export interface LawRecount {
  lawId: string;
  stored: { oui: number; non: number };
  recounted: { oui: number; non: number };
  /** Counted votes of this law recorded before the ledger existed (no batch). */
  beforeLedger: number;
  /** Counted votes of this law tagged with a batch id that is not in the ledger. */
  unknownBatch: number;
}

/** True when the stored totals equal the recount. */
export function agrees(law: LawRecount): boolean {
  return law.stored.oui === law.recounted.oui && law.stored.non === law.recounted.non;
}

/** The recount of every law that either table names, in law id order (byte order). */
export async function recount(tx: Sql): Promise<LawRecount[]> {
  const rows = await tx<
    { law_id: string; s_oui: string; s_non: string; r_oui: string; r_non: string; before: string; unknown: string }[]
  >`
    with audit as (
      select a.law_id,
             count(*) filter (where coalesce(a.vote, a.choice) = 'oui') as oui,
             count(*) filter (where coalesce(a.vote, a.choice) = 'non') as non,
             count(*) filter (where a.batch_id is null) as before,
             count(*) filter (where a.batch_id is not null and l.seq is null) as unknown
      from vote_audit a left join vote_ledger l on l.batch_id = a.batch_id
      where a.status = 'aggregated'
      group by a.law_id
    )
    select coalesce(r.law_id, a.law_id) as law_id,
           coalesce(r.oui_count, 0) as s_oui, coalesce(r.non_count, 0) as s_non,
           coalesce(a.oui, 0) as r_oui, coalesce(a.non, 0) as r_non,
           coalesce(a.before, 0) as before, coalesce(a.unknown, 0) as unknown
    from vote_results r full join audit a on a.law_id = r.law_id
    order by coalesce(r.law_id, a.law_id) collate "C"`;
  return rows.map((r) => ({
    lawId: r.law_id,
    stored: { oui: Number(r.s_oui), non: Number(r.s_non) },
    recounted: { oui: Number(r.r_oui), non: Number(r.r_non) },
    beforeLedger: Number(r.before),
    unknownBatch: Number(r.unknown),
  }));
}

/** The batches (and laws) of counted audit rows whose batch id the ledger does not hold. */
export async function unknownBatches(tx: Sql): Promise<{ batchId: string; lawId: string; votes: number }[]> {
  const rows = await tx<{ batch_id: string; law_id: string; votes: string }[]>`
    select a.batch_id, a.law_id, count(*) as votes
    from vote_audit a
    where a.status = 'aggregated' and a.batch_id is not null
      and not exists (select 1 from vote_ledger l where l.batch_id = a.batch_id)
    group by 1, 2 order by a.batch_id, a.law_id collate "C"`;
  return rows.map((r) => ({ batchId: r.batch_id, lawId: r.law_id, votes: Number(r.votes) }));
}
