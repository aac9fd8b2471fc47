/**
 * What verify found wrong, each located: which batch of the ledger (its seq
 * and id) and which law, as far as the evidence goes. Only the shape and the
 * one-line wording; the checks are in {@link ./recount.ts}, {@link ./chain.ts}
 * and {@link ./verify.ts}.
 *
 * @module
 */

/** The kinds of difference verify reports. */
export type FindingKind =
  /** `vote_results` differs from the recount of the audit trail (law). */
  | "results_differ"
  /** A batch's audit rows hold other per-law counts than its ledger row (batch, law). */
  | "batch_votes_differ"
  /** Same counts, other votes: a vote hash or choice of the batch changed (batch, law). */
  | "batch_votes_changed"
  /** A ledger row's digest does not follow from its own fields: the row was edited (batch). */
  | "ledger_row_altered"
  /** A ledger row does not chain to the row before it: inserted, deleted or reordered rows (batch). */
  | "chain_broken"
  /** Counted audit rows tagged with a batch the ledger does not hold (batch id, law). */
  | "unknown_batch"
  /** `ledger_head` is not the ledger's last row. */
  | "head_differs"
  /** The published digest given with --expect is not in the chain. */
  | "expected_digest_missing";

/** One difference, located. */
export interface Finding {
  kind: FindingKind;
  /** `vote_ledger.seq` of the batch, when known. */
  seq?: number;
  /** The batch's id, when known. */
  batchId?: string;
  lawId?: string;
  /** What differs, in words (values, not internals). */
  detail: string;
}

/** One line for a finding: `kind (batch seq N <id>, law L): detail`. */
export function describeFinding(finding: Finding): string {
  const where = [
    finding.seq !== undefined ? `batch ${finding.seq}` : undefined,
    finding.batchId ? `id ${finding.batchId}` : undefined,
    finding.lawId !== undefined ? `law ${JSON.stringify(finding.lawId)}` : undefined,
  ].filter(Boolean).join(", ");
  return `${finding.kind}${where ? ` (${where})` : ""}: ${finding.detail}`;
}
