/**
 * A batch as column arrays: one array parameter per column, so that a whole
 * batch is one statement (`unnest`) whatever its size, for the statements in
 * this folder.
 *
 * @module
 */

import type { Choice, Vote } from "../../vote.ts";

/** The columns of a batch of votes, in the batch's order. */
export interface VoteColumns {
  hash: string[];
  citizenId: (string | null)[];
  lawId: string[];
  choice: Choice[];
  timestamp: (string | null)[];
}

/** `votes` as column arrays. */
export function toColumns(votes: Vote[]): VoteColumns {
  const columns: VoteColumns = { hash: [], citizenId: [], lawId: [], choice: [], timestamp: [] };
  for (const vote of votes) {
    columns.hash.push(vote.hash);
    columns.citizenId.push(vote.citizenId);
    columns.lawId.push(vote.lawId);
    columns.choice.push(vote.choice);
    columns.timestamp.push(vote.timestamp);
  }
  return columns;
}
