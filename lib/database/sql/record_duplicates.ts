/**
 * Recording duplicate attempts: of the votes the counting statement did not
 * count, those whose content differs from the counted vote with the same hash
 * are written once to `duplicate_attempts`; copies identical to it are
 * redeliveries and write nothing. Idempotent, so a retry or a crash between the
 * two statements records nothing twice.
 *
 * @module
 */

import type { Sql } from "../pool.ts";
import type { Vote } from "../../vote.ts";
import { toColumns } from "./vote_columns.ts";

/**
 * Records the duplicate attempts among `votes` (votes not counted by `countVotes`).
 *
 * @returns how many were newly recorded; the others are redeliveries or attempts recorded before
 */
export async function recordDuplicates(sql: Sql, votes: Vote[]): Promise<number> {
  const rest = toColumns(votes);
  const recorded = await sql`
    insert into duplicate_attempts (vote_hash, citizen_id, law_id, choice, attempt_timestamp)
    select b.vote_hash, b.citizen_id, b.law_id, b.choice, b.ts
    from unnest(
      ${sql.array(rest.hash)}::text[], ${sql.array(rest.citizenId)}::text[],
      ${sql.array(rest.lawId)}::text[], ${sql.array(rest.choice)}::text[],
      ${sql.array(rest.timestamp)}::timestamptz[]
    ) as b(vote_hash, citizen_id, law_id, choice, ts)
    -- One index probe per vote, whatever the planner's statistics say of vote_audit (a fresh table's
    -- estimates would otherwise pick a scan of every counted row, on every batch).
    cross join lateral (
      select a.law_id, a.vote, a.choice, a."timestamp", a.citizen_id from vote_audit a
      where a.vote_hash = b.vote_hash and a.status = 'aggregated'
      limit 1
    ) a
    where (a.law_id, coalesce(a.vote, a.choice), a."timestamp", a.citizen_id)
          is distinct from (b.law_id, b.choice, b.ts, b.citizen_id)
    order by b.vote_hash
    on conflict (vote_hash, law_id, choice, attempt_timestamp, citizen_id) where detected_at is not null
    do nothing
    returning 1`;
  return recorded.count;
}
