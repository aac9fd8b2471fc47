/**
 * Viewers of the results, as a crowd behind a cache makes them, and how old
 * what they saw was: for the nginx test and the benchmark's viewers phase.
 *
 * - {@link CommitLog}: LISTENs on the database's results channel and keeps the
 *   moment each law's version was committed (heard), as bench/subscribers.ts does.
 * - {@link startViewers}: `count` loops, each a viewer polling one URL
 *   (`/results` or `/results/{law_id}`) with conditional requests, as the page
 *   does in poll mode, every `intervalMs` (0: as fast as answers come).
 * - Staleness of an answer received at `t`: how long before `t` the first
 *   version it does not show was committed (0 when it shows the latest). A 304
 *   shows what the viewer holds.
 *
 * @module
 */

import type postgres from "postgres";
import { parseNotification, RESULTS_CHANNEL } from "../../lib/results/store.ts";
import { testPool } from "./servers.ts";

/** When each law's versions were committed, as a LISTEN on the database heard them. */
export class CommitLog implements AsyncDisposable {
  /** law → version → `performance.now()` when heard. */
  readonly committed = new Map<string, Map<number, number>>();
  readonly #sql: postgres.Sql;

  private constructor(sql: postgres.Sql) {
    this.#sql = sql;
  }

  /** Listens on `databaseUrl`'s results channel. */
  static async listen(databaseUrl: string): Promise<CommitLog> {
    const log = new CommitLog(testPool(databaseUrl, 1));
    await log.#sql.listen(RESULTS_CHANNEL, (payload) => {
      const now = performance.now();
      for (const { lawId, version } of parseNotification(payload) ?? []) {
        const versions = log.committed.get(lawId) ?? new Map<number, number>();
        log.committed.set(lawId, versions);
        if (!versions.has(version)) versions.set(version, now);
      }
    });
    return log;
  }

  /** Ms by which `shown` (law → version) was out of date at `at`, over `laws` (all heard when undefined). */
  staleness(shown: ReadonlyMap<string, number>, at: number, laws?: readonly string[]): number {
    let worst = 0;
    for (const law of laws ?? this.committed.keys()) {
      const next = this.committed.get(law)?.get((shown.get(law) ?? 0) + 1);
      if (next !== undefined && next < at) worst = Math.max(worst, at - next);
    }
    return worst;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#sql.end({ timeout: 1 });
  }
}

/** One answer a viewer got. */
interface Sample {
  at: number;
  shown: ReadonlyMap<string, number>;
}

/** What the viewers did, once stopped. */
export interface ViewerReport {
  requests: number;
  /** Answers 200 (a new body) and 304 (the viewer's own is current). */
  ok: number;
  notModified: number;
  /** Answers of any other status, or failed requests. */
  errors: number;
  /** The first few errors, said. */
  errorSamples: string[];
  seconds: number;
  /** Staleness of every answer, in ms, ascending. */
  staleness: number[];
}

/** A running crowd of viewers. */
export interface Viewers {
  /** Stops every viewer (each ends its request under way) and reports, staleness from `log`. */
  stop(log: CommitLog): Promise<ViewerReport>;
}

/** Options of {@link startViewers}. */
export interface ViewerOptions {
  /** Base URL (nginx's). */
  url: string;
  /** Viewers; each holds at most one connection at a time. */
  count: number;
  /** Paths the viewers poll, shared out among them in turn. @default ["/results"] */
  paths?: readonly string[];
  /** Pause between a viewer's answer and its next request; 0: none. @default 1000, as the page */
  intervalMs?: number;
}

/** Starts `count` viewers polling `paths` of `url`. */
export function startViewers(options: ViewerOptions): Viewers {
  const paths = options.paths ?? ["/results"];
  const intervalMs = options.intervalMs ?? 1000;
  const stopping = new AbortController();
  const samples: { sample: Sample; law: string | undefined }[] = [];
  const report = { requests: 0, ok: 0, notModified: 0, errors: 0, errorSamples: [] as string[] };
  const started = performance.now();
  const fail = (what: string) => {
    report.errors++;
    if (report.errorSamples.length < 5) report.errorSamples.push(what);
  };
  const viewer = async (path: string) => {
    const law = path.startsWith("/results/") ? decodeURIComponent(path.slice("/results/".length)) : undefined;
    let tag: string | undefined;
    let shown: ReadonlyMap<string, number> = new Map();
    while (!stopping.signal.aborted) {
      try {
        const response = await fetch(`${options.url}${path}`, {
          headers: tag ? { "if-none-match": tag } : {},
          signal: stopping.signal,
        });
        const body = await response.text();
        const at = performance.now();
        report.requests++;
        if (response.status === 200) {
          report.ok++;
          tag = response.headers.get("etag") ?? undefined;
          const parsed = JSON.parse(body);
          const laws: { law_id: string; version: number }[] = law === undefined ? parsed.laws : [parsed];
          shown = new Map(laws.map((l) => [l.law_id, l.version]));
        } else if (response.status === 304) report.notModified++;
        else if (response.status === 404 && law !== undefined) shown = new Map(); // no vote for it yet
        else fail(`${path}: ${response.status} ${body.slice(0, 120)}`);
        samples.push({ sample: { at, shown }, law });
      } catch (error) {
        if (stopping.signal.aborted) break;
        fail(`${path}: ${(error as Error).message}`);
      }
      if (intervalMs > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, intervalMs);
          stopping.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
        });
      }
    }
  };
  const running = Array.from({ length: options.count }, (_, i) => viewer(paths[i % paths.length]));
  return {
    async stop(log) {
      stopping.abort();
      await Promise.all(running);
      const seconds = (performance.now() - started) / 1000;
      const staleness = samples.map(({ sample, law }) =>
        log.staleness(sample.shown, sample.at, law === undefined ? undefined : [law])
      ).sort((a, b) => a - b);
      return { ...report, seconds, staleness };
    },
  };
}

/** The `q` quantile of ascending `values` (undefined when empty). */
export function quantile(values: readonly number[], q: number): number | undefined {
  return values.length ? values[Math.min(values.length - 1, Math.floor(q * values.length))] : undefined;
}
