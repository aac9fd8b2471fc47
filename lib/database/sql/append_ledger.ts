/**
 * Appending to the batch ledger, as common table expressions of the counting
 * statement ({@link ./count_votes.ts}): so the ledger row is written in the
 * counting transaction and is exactly as durable as the count. It owns the
 * canonical encoding of a batch as the database computes it; `lib/audit/`
 * recomputes the same encoding from `vote_audit` to check the chain.
 *
 * The fragment expects the counting statement's CTEs `counted` (vote_hash,
 * law_id, choice of the votes this batch counted) and `upserted` (the
 * `vote_results` rows it incremented). It defines:
 *
 * - `ledger_laws`: per law, the votes added and the law's digest,
 *   `sha256("<vote_hash><choice>" … in vote_hash order)` (64 hex digits, then `oui` or `non`);
 * - `ledger_head_moved`: the one `ledger_head` row moved on by one, its new
 *   digest computed from its current one. The row lock serialises every
 *   instance's appends (one chain): a concurrent append waits, and the update
 *   is re-evaluated on the row it committed. It reads `upserted` to the end
 *   first, so every transaction locks its `vote_results` rows before the head
 *   (one lock order, no deadlock);
 * - `ledger_row`: the `vote_ledger` row.
 *
 * A batch that counted nothing (only redeliveries) appends nothing.
 *
 * @module
 */

import type { Sql } from "../pool.ts";

/** What {@link appendLedger} needs. */
export interface LedgerAppend {
  /** `vote_ledger.batch_id`, also written to the counted `vote_audit` rows. */
  batchId: string;
  /** `vote_ledger.instance`. */
  instance: string;
  /** False leaves the ledger alone (the benchmark's comparison only; the service always appends). @default true */
  enabled?: boolean;
}

/**
 * A new batch id: a UUIDv7 (RFC 9562), so ids grow with time and a batch's audit rows, written together,
 * are found by `vote_audit_batch`, a BRIN index (see sql/004_batch_ledger.sql).
 */
export function newBatchId(now = Date.now()): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  for (let i = 0; i < 6; i++) bytes[i] = Math.floor(now / 2 ** (8 * (5 - i))) & 0xff;
  bytes[6] = 0x70 | (bytes[6] & 0x0f);
  bytes[8] = 0x80 | (bytes[8] & 0x3f);
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The ledger's CTEs, to follow the counting statement's own (`, ${appendLedger(…)}`). */
export function appendLedger(sql: Sql, { batchId, instance, enabled = true }: LedgerAppend) {
  return sql`
    ledger_laws as (
      select law_id,
             count(*) filter (where choice = 'oui') as oui,
             count(*) filter (where choice = 'non') as non,
             encode(sha256(convert_to(
               string_agg(vote_hash || choice, '' order by vote_hash collate "C"), 'UTF8')), 'hex')
               as digest
      from counted where ${enabled}::boolean group by law_id
    ),
    ledger_head_moved as (
      update ledger_head h
      set seq = h.seq + 1,
          prev_digest = h.digest,
          digest = encode(sha256(convert_to(
            h.digest || E'\n' || (h.seq + 1)::text || E'\n' || ${batchId}::text || E'\n' || c.votes::text || E'\n' ||
              c.content, 'UTF8')), 'hex')
      from (
        select sum(oui + non) as votes,
               string_agg(octet_length(law_id)::text || ':' || law_id || ' ' || oui || ' ' || non || ' ' || digest
                          || E'\n', '' order by law_id collate "C") as content
        from ledger_laws having count(*) > 0
      ) c,
      (select count(*) from upserted) locked_results_first
      where h.id = 1
      returning h.seq, h.prev_digest, h.digest, c.votes
    ),
    ledger_row as (
      insert into vote_ledger (seq, batch_id, instance, votes, laws, prev_digest, digest)
      select m.seq, ${batchId}::uuid, ${instance}, m.votes,
             (select jsonb_object_agg(law_id, jsonb_build_array(oui, non, digest)) from ledger_laws),
             m.prev_digest, m.digest
      from ledger_head_moved m
      returning seq
    )`;
}
