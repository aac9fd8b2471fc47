/**
 * Replaying the batch ledger: every `vote_ledger` row in chain order, checked
 * against the audit rows of its batch and against the row before it, in
 * chunks of batches, so the pass is linear in the audit rows and can report
 * progress. A chunk's audit rows are found through `vote_audit_batch`, a BRIN
 * index over the time-ordered batch ids: the range of the chunk's ids selects
 * the pages, the ids themselves the rows. (Instances whose clocks disagree by
 * more than a chunk's time span make chunks overlap: still right, slower.)
 *
 * The canonical encoding (the same as {@link ../database/sql/append_ledger.ts} writes):
 *
 * - a law's digest: `sha256` of `"<vote_hash><choice>"` (64 hex, `oui`/`non`) for each vote of the
 *   batch and law, in vote_hash order;
 * - the batch's content: `"<bytes of law_id>:<law_id> <oui> <non> <law digest>\n"`
 *   per law, in law id byte order;
 * - the row's digest: `sha256(prev_digest "\n" seq "\n" batch_id "\n" votes "\n" content)`,
 *   hex; the first row's prev_digest is 64 zeros.
 *
 * The database computes both sides (PostgreSQL's `sha256`), so the two
 * encodings cannot drift apart by a client's string rules.
 *
 * @module
 */

import type postgres from "postgres";

/** A transaction (verify's snapshot). */
type Sql = postgres.TransactionSql;
import type { Finding } from "./findings.ts";

/** The digest before the first batch. */
export const GENESIS_DIGEST = "0".repeat(64);

/** A law's part of a batch: `[oui, non, digest]`. */
type LawPart = [number, number, string];

/** What {@link replayChain} found. */
export interface ChainReplay {
  batches: number;
  /** Votes the ledger says its batches counted. */
  votes: number;
  /** The last row's seq and digest (0 and {@link GENESIS_DIGEST} for an empty ledger). */
  head: { seq: number; digest: string; at: string | null };
  /** Every digest of the chain by seq, only when asked for (to check a published digest). */
  digests?: Map<string, number>;
  findings: Finding[];
}

/** Options of {@link replayChain}. */
export interface ReplayOptions {
  /** Batches per query. @default 500 */
  chunkBatches?: number;
  /** Told the votes replayed so far, of the total. */
  onProgress?: (done: number, total: number) => void;
  /** Keep every digest (for --expect). @default false */
  keepDigests?: boolean;
}

interface ChunkRow {
  seq: string;
  batch_id: string;
  votes: number;
  laws: Record<string, LawPart>;
  audit_laws: Record<string, LawPart>;
  prev_digest: string;
  digest: string;
  recomputed: string;
  created_at: Date;
}

/** Replays the ledger on `tx` (a repeatable-read snapshot, for a consistent answer). */
export async function replayChain(tx: Sql, options: ReplayOptions = {}): Promise<ChainReplay> {
  const [{ batches, votes }] = await tx<{ batches: string; votes: string }[]>`
    select count(*) as batches, coalesce(sum(votes), 0) as votes from vote_ledger`;
  const total = Number(votes);
  const replay: ChainReplay = {
    batches: Number(batches),
    votes: total,
    head: { seq: 0, digest: GENESIS_DIGEST, at: null },
    digests: options.keepDigests ? new Map() : undefined,
    findings: [],
  };
  let done = 0;
  let last = 0;
  options.onProgress?.(0, total);
  for (;;) {
    const rows = await chunk(tx, last, options.chunkBatches ?? 500);
    if (rows.length === 0) break;
    for (const row of rows) {
      checkRow(row, replay);
      done += row.votes;
    }
    last = Number(rows[rows.length - 1].seq);
    options.onProgress?.(done, total);
  }
  return replay;
}

function checkRow(row: ChunkRow, replay: ChainReplay): void {
  const seq = Number(row.seq);
  const where = { seq, batchId: row.batch_id };
  const findings = replay.findings;
  if (seq !== replay.head.seq + 1) {
    findings.push({
      kind: "chain_broken",
      ...where,
      detail: `follows batch ${replay.head.seq}: ledger rows ${replay.head.seq + 1}..${seq - 1} are missing`,
    });
  } else if (row.prev_digest !== replay.head.digest) {
    findings.push({
      kind: "chain_broken",
      ...where,
      detail: `prev_digest ${row.prev_digest} is not batch ${replay.head.seq}'s digest ${replay.head.digest}`,
    });
  }
  if (row.recomputed !== row.digest) {
    findings.push({
      kind: "ledger_row_altered",
      ...where,
      detail: `digest ${row.digest} does not follow from the row's fields (they give ${row.recomputed})`,
    });
  }
  const laws = [...new Set([...Object.keys(row.laws), ...Object.keys(row.audit_laws)])].sort();
  for (const lawId of laws) {
    const [lo, ln, ld] = row.laws[lawId] ?? [0, 0, ""];
    const [ao, an, ad] = row.audit_laws[lawId] ?? [0, 0, ""];
    if (lo !== ao || ln !== an) {
      findings.push({
        kind: "batch_votes_differ",
        ...where,
        lawId,
        detail: `the ledger says +${lo} oui +${ln} non, the audit rows of the batch hold ${ao} oui ${an} non`,
      });
    } else if (ld !== ad) {
      findings.push({
        kind: "batch_votes_changed",
        ...where,
        lawId,
        detail: `same counts, other votes: law digest ${ad} in the audit rows, ${ld} in the ledger`,
      });
    }
  }
  replay.head = { seq, digest: row.digest, at: row.created_at.toISOString() };
  replay.digests?.set(row.digest, seq);
}

function chunk(tx: Sql, after: number, limit: number): Promise<ChunkRow[]> {
  return tx<ChunkRow[]>`
    with l as (
      select seq, batch_id, votes, laws, prev_digest, digest, created_at
      from vote_ledger where seq > ${after} order by seq limit ${limit}
    ),
    -- Materialised: one scan of the chunk's pages, not one per ledger row. The range of the chunk's
    -- ids picks the pages; a batch outside the chunk found there (clock skew) is left out by the join.
    audit as materialized (
      select batch_id, law_id,
             count(*) filter (where choice = 'oui') as oui,
             count(*) filter (where choice = 'non') as non,
             encode(sha256(convert_to(string_agg(vote_hash || choice, '' order by vote_hash collate "C"),
                                      'UTF8')), 'hex') as digest
      from (
        select a.batch_id, a.law_id collate "C" as law_id, a.vote_hash, coalesce(a.vote, a.choice) as choice
        from vote_audit a
        -- (PostgreSQL 15 has no min(uuid).)
        where a.batch_id between (select batch_id from l order by 1 limit 1)
                             and (select batch_id from l order by 1 desc limit 1)
          and a.status = 'aggregated'
      ) counted
      group by 1, 2
    ),
    audit_batches as (
      select batch_id, jsonb_object_agg(law_id, jsonb_build_array(oui, non, digest)) as laws
      from audit group by batch_id
    )
    select l.seq, l.batch_id::text, l.votes, l.laws, l.prev_digest, l.digest, l.created_at,
           coalesce(ab.laws, '{}') as audit_laws,
           encode(sha256(convert_to(
             l.prev_digest || E'\n' || l.seq::text || E'\n' || l.batch_id::text || E'\n' || l.votes::text || E'\n' ||
             coalesce((select string_agg(octet_length(key)::text || ':' || key || ' ' || (value ->> 0) || ' ' ||
                                         (value ->> 1) || ' ' || (value ->> 2) || E'\n', '' order by key collate "C")
                       from jsonb_each(l.laws)), ''), 'UTF8')), 'hex') as recomputed
    from l left join audit_batches ab on ab.batch_id = l.batch_id
    order by l.seq`;
}
