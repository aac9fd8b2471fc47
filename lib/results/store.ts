/**
 * Results as the database holds them: reading `vote_results` (all laws, some,
 * or one) as the results API shows them, and the notification the counting
 * statement sends on commit (its channel, its payload's size and shape). It
 * owns no connection: the caller passes the results connection
 * ({@link ./listener.ts}), never the write pool. Fanning out is
 * {@link ./hub.ts}'s, HTTP is {@link ./routes.ts}'s.
 *
 * @example
 * ```ts
 * import { readResults } from "./store.ts";
 * const laws = await readResults(sql); // every law, in law id order
 * ```
 *
 * @module
 */

import type { Sql } from "../database/pool.ts";

/** The channel `lib/database/sql/count_votes.ts` notifies on commit; PostgreSQL scopes it to the database. */
export const RESULTS_CHANNEL = "vote_results_changed";

/**
 * Laws per notification. A payload holds `[law_id, version]` pairs as JSON: at most 50 characters of id
 * (up to 300 bytes once JSON-escaped, 200 of UTF-8) and 19 digits each, so 20 of them stay under 7,000
 * bytes, within PostgreSQL's 8,000-byte limit; a batch touching more laws sends several.
 */
export const NOTIFY_CHUNK_LAWS = 20;

/** Longest law id (`vote_results.law_id` is varchar(50); the parser counts code points). */
export const MAX_LAW_ID_LENGTH = 50;

/** One law's committed totals, as the API and the stream show them. */
export interface LawResult {
  law_id: string;
  oui_count: number;
  non_count: number;
  total_votes: number;
  /** Goes up by one with each committed change; the highest version is the latest totals. */
  version: number;
  /** ISO 8601. */
  updated_at: string;
}

/** A law and version named by a notification. */
export interface ChangedLaw {
  lawId: string;
  version: number;
}

interface Row {
  law_id: string;
  oui_count: string;
  non_count: string;
  total_votes: string;
  version: string;
  updated_at: Date;
}

function toResult(row: Row): LawResult {
  return {
    law_id: row.law_id,
    oui_count: Number(row.oui_count),
    non_count: Number(row.non_count),
    total_votes: Number(row.total_votes),
    version: Number(row.version),
    updated_at: row.updated_at.toISOString(),
  };
}

/** Every law's totals, or those of `lawIds`, in law id order. */
export async function readResults(sql: Sql, lawIds?: readonly string[]): Promise<LawResult[]> {
  const rows = lawIds === undefined
    ? await sql<Row[]>`
        select law_id, oui_count, non_count, total_votes, version, updated_at
        from vote_results order by law_id`
    : await sql<Row[]>`
        select law_id, oui_count, non_count, total_votes, version, updated_at
        from vote_results where law_id = any(${sql.array([...lawIds])}::text[]) order by law_id`;
  return rows.map(toResult);
}

/** One law's totals; undefined when no vote was counted for it (or the id cannot be one). */
export async function readLaw(sql: Sql, lawId: string): Promise<LawResult | undefined> {
  if ([...lawId].length > MAX_LAW_ID_LENGTH) return undefined;
  const [row] = await sql<Row[]>`
    select law_id, oui_count, non_count, total_votes, version, updated_at
    from vote_results where law_id = ${lawId}`;
  return row && toResult(row);
}

/**
 * A notification's payload: `[["LAW-001", 12], …]`.
 *
 * @returns undefined for a payload that is not one (someone else notifying on the channel)
 */
export function parseNotification(payload: string): ChangedLaw[] | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (!Array.isArray(parsed)) return undefined;
  const changed: ChangedLaw[] = [];
  for (const item of parsed) {
    if (
      !Array.isArray(item) || item.length !== 2 || typeof item[0] !== "string" || !Number.isSafeInteger(item[1])
    ) return undefined;
    changed.push({ lawId: item[0], version: item[1] });
  }
  return changed;
}
