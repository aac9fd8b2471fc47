/**
 * Printing a verify report: the table people read (law, stored, recounted,
 * difference, then what was found, each located) and the JSON machines read.
 * It only formats; {@link ./verify.ts} decides.
 *
 * @module
 */

import { describeFinding } from "./findings.ts";
import type { VerifyReport } from "./verify.ts";

/** The report as text: the per-law table, the ledger's summary, the findings. */
export function formatReport(report: VerifyReport): string {
  const rows = report.laws.map((law) => {
    const diffOui = law.stored.oui - law.recounted.oui;
    const diffNon = law.stored.non - law.recounted.non;
    const signed = (n: number) => (n > 0 ? `+${n}` : `${n}`);
    return [
      law.lawId,
      `${law.stored.oui} oui / ${law.stored.non} non`,
      `${law.recounted.oui} oui / ${law.recounted.non} non`,
      diffOui === 0 && diffNon === 0 ? "0" : `${signed(diffOui)} oui, ${signed(diffNon)} non`,
    ];
  });
  const header = ["law", "stored", "recounted", "difference"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd();
  const rate = report.seconds > 0 ? Math.round(report.auditRows / report.seconds) : 0;
  const out = [
    line(header),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map(line),
    "",
    `ledger: ${report.ledger.batches} batches, ${report.ledger.votes} votes, head batch ${report.ledger.head.seq} ` +
    `digest ${report.ledger.head.digest}`,
    `audit: ${report.auditRows} counted votes recounted in ${report.seconds.toFixed(2)} s (${rate} rows/s)` +
    (report.beforeLedger > 0 ? `; ${report.beforeLedger} counted before the ledger existed (not chained)` : ""),
  ];
  if (report.ok) out.push("OK: the totals agree with the audit trail and the ledger's chain holds");
  else {
    const laws = [...new Set(report.findings.map((f) => f.lawId).filter((l) => l !== undefined))];
    out.push(
      `DIFFERENCES: ${report.findings.length} finding(s)${laws.length ? `; laws ${laws.join(", ")}` : ""}`,
      ...report.findings.map((f) => `  ${describeFinding(f)}`),
    );
  }
  return out.join("\n");
}

/** The report as one JSON document (snake_case, numbers as numbers). */
export function reportJson(report: VerifyReport): string {
  return JSON.stringify({
    ok: report.ok,
    laws: report.laws.map((law) => ({
      law_id: law.lawId,
      stored: law.stored,
      recounted: law.recounted,
      difference: { oui: law.stored.oui - law.recounted.oui, non: law.stored.non - law.recounted.non },
      before_ledger: law.beforeLedger,
      unknown_batch: law.unknownBatch,
    })),
    ledger: { batches: report.ledger.batches, votes: report.ledger.votes, head: report.ledger.head },
    audit_rows: report.auditRows,
    before_ledger: report.beforeLedger,
    findings: report.findings.map((f) => ({
      kind: f.kind,
      seq: f.seq ?? null,
      batch_id: f.batchId ?? null,
      law_id: f.lawId ?? null,
      detail: f.detail,
    })),
    seconds: report.seconds,
    rows_per_second: report.seconds > 0 ? report.auditRows / report.seconds : null,
  });
}

/** The line `verify --digest` prints: what to publish. */
export function digestLine(report: VerifyReport): string {
  const { seq, digest, at } = report.ledger.head;
  return `${seq} ${digest}${at ? ` ${at}` : ""}`;
}
