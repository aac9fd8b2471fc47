/**
 * Verify: the recount ({@link ./recount.ts}) and the ledger's replay
 * ({@link ./chain.ts}) in one consistent snapshot — a repeatable-read,
 * read-only transaction, so it runs on a live database without blocking the
 * counting and without seeing half of a batch — plus the checks that tie them
 * together: the head row, audit rows of batches the ledger does not hold, and
 * an optionally published digest. It owns the report; printing it is
 * {@link ./report.ts}'s.
 *
 * @example
 * ```ts
 * import { verify } from "./verify.ts";
 * const report = await verify(sql);
 * if (!report.ok) console.log(report.findings);
 * ```
 *
 * @module
 */

import type { Sql } from "../database/pool.ts";
import { type ChainReplay, replayChain } from "./chain.ts";
import type { Finding } from "./findings.ts";
import { agrees, type LawRecount, recount, unknownBatches } from "./recount.ts";

export type { Finding, LawRecount };

/** A digest published earlier (`verify --digest`), to be found in the chain. */
export interface ExpectedDigest {
  digest: string;
  /** Its batch, when published with it. */
  seq?: number;
}

/** Options of {@link verify}. */
export interface VerifyOptions {
  /** Published digests that must be in the chain (at their seq when given). */
  expect?: ExpectedDigest[];
  /** Told the ledger's votes replayed so far. */
  onProgress?: (done: number, total: number) => void;
  /** Batches per chunk of the replay. @default 500 */
  chunkBatches?: number;
}

/** What {@link verify} found. */
export interface VerifyReport {
  /** True when the totals agree and nothing was found. */
  ok: boolean;
  laws: LawRecount[];
  ledger: Omit<ChainReplay, "findings" | "digests">;
  /** Audit rows read (counted votes). */
  auditRows: number;
  /** Votes counted before the ledger existed (no batch): recounted, not chained. */
  beforeLedger: number;
  findings: Finding[];
  seconds: number;
}

/** Verifies the database behind `sql`; see the module documentation. */
export async function verify(sql: Sql, options: VerifyOptions = {}): Promise<VerifyReport> {
  const started = performance.now();
  await summarizeBatchIndex(sql);
  return await sql.begin("isolation level repeatable read read only", async (tx) => {
    // Sorting a chunk's votes in memory, not on disk; no JIT compilation of each chunk's query (it cost more
    // than it saved). Local to this transaction.
    await tx`select set_config('work_mem', '64MB', true), set_config('jit', 'off', true)`;
    const laws = await recount(tx);
    const replay = await replayChain(tx, {
      chunkBatches: options.chunkBatches,
      onProgress: options.onProgress,
      keepDigests: (options.expect?.length ?? 0) > 0,
    });
    const findings: Finding[] = [];
    for (const law of laws) {
      if (agrees(law)) continue;
      findings.push({
        kind: "results_differ",
        lawId: law.lawId,
        detail: `vote_results holds ${law.stored.oui} oui ${law.stored.non} non, ` +
          `the audit trail ${law.recounted.oui} oui ${law.recounted.non} non`,
      });
    }
    if (laws.some((law) => law.unknownBatch > 0)) {
      for (const { batchId, lawId, votes } of await unknownBatches(tx)) {
        findings.push({
          kind: "unknown_batch",
          batchId,
          lawId,
          detail: `${votes} counted audit row(s) name this batch, which the ledger does not hold`,
        });
      }
    }
    findings.push(...replay.findings);
    const [head] = await tx<{ seq: string; digest: string }[]>`select seq, digest from ledger_head where id = 1`;
    if (!head || Number(head.seq) !== replay.head.seq || head.digest !== replay.head.digest) {
      findings.push({
        kind: "head_differs",
        detail: head
          ? `ledger_head says batch ${head.seq} ${head.digest}, the ledger ends at batch ${replay.head.seq} ${replay.head.digest}`
          : "ledger_head has no row: batches are counted without being chained",
      });
    }
    for (const expected of options.expect ?? []) {
      const at = replay.digests?.get(expected.digest);
      if (at === undefined || (expected.seq !== undefined && at !== expected.seq)) {
        findings.push({
          kind: "expected_digest_missing",
          seq: expected.seq,
          detail: at === undefined
            ? `the published digest ${expected.digest} is not in the chain: the ledger was rewritten`
            : `the published digest ${expected.digest} is at batch ${at}, not ${expected.seq}`,
        });
      }
    }
    const { digests: _, findings: __, ...ledger } = replay;
    const auditRows = laws.reduce((n, law) => n + law.recounted.oui + law.recounted.non, 0);
    return {
      ok: findings.length === 0,
      laws,
      ledger,
      auditRows,
      beforeLedger: laws.reduce((n, law) => n + law.beforeLedger, 0),
      findings,
      seconds: (performance.now() - started) / 1000,
    };
  });
}

/**
 * Asks PostgreSQL to summarise the BRIN ranges of `vote_audit_batch` not yet summarised (the latest
 * pages), so that each chunk reads only its own pages. Best effort, before the snapshot: a role that
 * may not (only the table's owner may) verifies all the same, a little slower.
 */
async function summarizeBatchIndex(sql: Sql): Promise<void> {
  try {
    await sql`select brin_summarize_new_values('vote_audit_batch')`;
  } catch { /* not the owner, or an older schema: the chunks read more pages */ }
}

/** `HEX`, `HEX@SEQ`, or the line `verify --digest` prints (`SEQ HEX [TIME]`). */
export function parseExpectedDigest(text: string): ExpectedDigest | undefined {
  const match = text.trim().match(/^(?:(\d+)\s+)?([0-9a-f]{64})(?:@(\d+))?(?:\s+\S+)?$/i);
  if (!match) return undefined;
  const seq = match[1] ?? match[3];
  return { digest: match[2].toLowerCase(), ...(seq !== undefined ? { seq: Number(seq) } : {}) };
}
