/**
 * The benchmark's output: progress lines on stderr, one row per measured
 * phase, and the markdown table docs/performance.md's tables are built from.
 *
 * @module
 */

/** One row of the table. */
export interface Row {
  phase: string;
  n: number;
  seconds?: number;
  rate?: number;
  p50?: number;
  p99?: number;
  max?: number;
  rssMb?: number;
  /** CPU (user + system) per message, in µs, of the consumer (the service, or the bare consumer) and of
   * the service's PostgreSQL backends, from the first vote visible to the last. */
  consumerUs?: number;
  postgresUs?: number;
  /** Mean votes per batch (`aggregation_stats`). */
  meanBatch?: number;
  /** Undefined when the phase has nothing to check (the ceiling). */
  exact?: boolean;
  notes: string[];
}

const encoder = new TextEncoder();
const stderrIsTerminal = Deno.stderr.isTerminal();
let lastProgressLine = 0;

/** A progress line: rewritten in place on a terminal, every 5 s otherwise (CI logs stay short). */
export function progress(text: string, force = false): void {
  const now = performance.now();
  if (stderrIsTerminal) {
    Deno.stderr.writeSync(encoder.encode(`\r\x1b[K${text}`));
  } else if (force || now - lastProgressLine >= 5000) {
    Deno.stderr.writeSync(encoder.encode(`${text}\n`));
    lastProgressLine = now;
  }
}

/** A line on stderr (clearing a progress line first). */
export function say(text: string): void {
  if (stderrIsTerminal) Deno.stderr.writeSync(encoder.encode("\r\x1b[K"));
  console.error(text);
}

/** The error's message; with `await using`, also what failed while cleaning up after it. */
export function describe(error: unknown): string {
  if (error instanceof SuppressedError) {
    return `${describe(error.suppressed)} (and then, cleaning up: ${describe(error.error)})`;
  }
  return error instanceof Error ? error.message : String(error);
}

/** The markdown table; ratios are to `ceilingRate`. */
export function table(rows: Row[], ceilingRate: number | undefined): string {
  const fixed = (n: number | undefined, digits = 0) =>
    n === undefined ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const lines = [
    "| phase | N | seconds | votes/s | ratio to ceiling | p50 ms | p99 ms | max ms | peak RSS MB | " +
    "consumer CPU µs/msg | PostgreSQL CPU µs/msg | mean batch | exact |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
  ];
  for (const r of rows) {
    const ratio = r.rate !== undefined && ceilingRate && r.p50 === undefined && !r.phase.startsWith("ceiling")
      ? `${(100 * r.rate / ceilingRate).toFixed(0)} %`
      : "—";
    const exact = r.exact === undefined ? "—" : r.exact ? "yes" : "**no**";
    lines.push(
      `| ${r.phase} | ${fixed(r.n)} | ${fixed(r.seconds, 2)} | ${fixed(r.rate)} | ${ratio} | ${fixed(r.p50)} | ${
        fixed(r.p99)
      } | ${fixed(r.max)} | ${fixed(r.rssMb)} | ${fixed(r.consumerUs, 1)} | ${fixed(r.postgresUs, 1)} | ${
        fixed(r.meanBatch)
      } | ${exact} |`,
    );
  }
  return lines.join("\n");
}
