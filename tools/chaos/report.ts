/**
 * The soak's summary: faults injected by kind with their recovery times (max
 * and p99), the votes and rates, and each end check, as Markdown tables (the
 * docs/testing.md's chaos soak section shows one).
 *
 * @module
 */

import type { Check } from "./checks.ts";
import type { FaultRecord } from "./runner.ts";
import { FAULT_KINDS } from "./scheduler.ts";

/** The figures of one soak. */
export interface SoakSummary {
  seed: number;
  instances: number;
  seconds: number;
  /** Planned faults that overlapped another. */
  overlapping: number;
  records: FaultRecord[];
  published: number;
  valid: number;
  duplicates: number;
  malformed: number;
  publishRate: number;
  republishedChunks: number;
  counted: number;
  /** Seconds from the faults' end until the queue was empty. */
  drainSeconds: number;
  /** Instance starts that failed and were tried again, as a supervisor would. */
  failedStarts: string[];
  checks: Check[];
  restarts: boolean;
}

/** The q-quantile (nearest rank) of `values`. */
export function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

const seconds = (ms: number) => Number.isNaN(ms) ? "—" : `${(ms / 1000).toFixed(2)} s`;

/** Markdown table rows from a header and rows. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [line(header), `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`, ...rows.map(line)].join("\n");
}

/** The summary as text: three tables and the verdict line. */
export function formatSummary(s: SoakSummary): string {
  const rows: string[][] = [];
  for (const kind of FAULT_KINDS) {
    const of = s.records.filter((r) => r.fault.kind === kind);
    if (of.length === 0 && (s.restarts || !kind.startsWith("restart_"))) {
      rows.push([kind, "0", "—", "—", "—"]);
      continue;
    }
    if (of.length === 0) {
      rows.push([kind, "off", "—", "—", "—"]);
      continue;
    }
    const times = of.flatMap((r) => r.recoveryMs === undefined ? [] : [r.recoveryMs]);
    const notRecovered = of.length - times.length;
    rows.push([
      kind,
      String(of.length),
      seconds(quantile(times, 0.5)),
      seconds(quantile(times, 0.99)),
      seconds(times.length ? Math.max(...times) : NaN) + (notRecovered ? ` (${notRecovered} never)` : ""),
    ]);
  }
  const all = s.records.flatMap((r) => r.recoveryMs === undefined ? [] : [r.recoveryMs]);
  rows.push([
    "all",
    String(s.records.length),
    seconds(quantile(all, 0.5)),
    seconds(quantile(all, 0.99)),
    seconds(all.length ? Math.max(...all) : NaN),
  ]);
  const faults = table(["fault", "injected", "recovery p50", "recovery p99", "recovery max"], rows);

  const votes = table(["", "value"], [
    ["duration", `${s.seconds.toFixed(0)} s, ${s.instances} instances, seed ${s.seed}`],
    ["faults overlapping another", `${s.overlapping} of ${s.records.length}`],
    ["messages published and confirmed", String(s.published)],
    ["… valid votes / duplicate attempts / malformed", `${s.valid} / ${s.duplicates} / ${s.malformed}`],
    ["publish rate", `${Math.round(s.publishRate)} msg/s (${s.republishedChunks} chunks published again)`],
    ["votes counted", `${s.counted} (${Math.round(s.counted / s.seconds)} votes/s over the run)`],
    ["drain after the last fault", `${s.drainSeconds.toFixed(1)} s`],
    ["instance starts that failed, tried again", String(s.failedStarts.length)],
  ]);
  const checks = table(
    ["check", "result", "detail"],
    s.checks.map((c) => [c.name, c.skipped ? "skipped" : c.ok ? "ok" : "FAILED", c.detail.replaceAll("\n", " ")]),
  );
  const failed = s.checks.filter((c) => !c.ok);
  const verdict = failed.length
    ? `CHAOS SOAK FAILED: ${failed.length} check(s) failed; reproduce with --seed ${s.seed}`
    : `chaos soak passed (seed ${s.seed})`;
  const starts = s.failedStarts.map((line) => `failed start (tried again): ${line}`);
  return [faults, votes, checks, ...starts, verdict].join("\n\n");
}
