/**
 * Phase 5, subscribers: the drain of N preloaded messages, once with no
 * results stream open and once with `--subscribers` streams (default 1,000)
 * open on `/results/stream`, each run on a fresh queue and database, the
 * service started as `deno task start` starts it. Each run: the service is
 * paused, the queue preloaded, the streams opened, then resumed; timed from
 * the resume to the last vote visible in `vote_results`.
 *
 * Commit → event latency: the bench holds its own LISTEN on the database, so
 * it hears each law's new version when its transaction commits; a measuring
 * subscriber's latency for that version is the time from there to the event
 * that brings it (or a later version of the law). 20 of the subscribers
 * measure; the others are held by a python3 child that reads and discards
 * (tests/support/sse.ts `streamCrowd`), so that the bench's own reading and
 * parsing does not pass for the service's latency.
 *
 * @module
 */

import { isDeepStrictEqual } from "node:util";
import { parseNotification, RESULTS_CHANNEL } from "../lib/results/store.ts";
import { createTestDatabase, createTestQueue, type TestDatabase, testPool } from "../tests/support/servers.ts";
import { cpuSeconds, peakRssMb } from "../tests/support/process.ts";
import { admin, ADMIN_TOKEN, type ServiceProcess, spawnService } from "../tests/support/service.ts";
import { openStream, type SseClient, streamCrowd } from "../tests/support/sse.ts";
import {
  benchEnv,
  benchMix,
  drainRow,
  expectedResults,
  type Options,
  preload,
  sleep,
  stopAndCheck,
  untilAllVisible,
} from "./common.ts";
import { progress, type Row, say } from "./report.ts";

const MEASURING = 20;

/** The two runs of the phase: without subscribers, then with `options.subscribers`. */
export async function subscribers(options: Options, signal: AbortSignal): Promise<Row[]> {
  const without = await run(options, 0, signal);
  const withThem = await run(options, options.subscribers, signal);
  const change = (withThem.rate! / without.rate! - 1) * 100;
  withThem.notes.push(
    `subscribers: drain rate ${Math.round(withThem.rate!)} votes/s with ${options.subscribers} streams open, ` +
      `${Math.round(without.rate!)} without (${change >= 0 ? "+" : ""}${change.toFixed(1)} %)`,
  );
  return [without, withThem];
}

/** Who watches a drain (see {@link watchedDrain}). */
export interface Audience {
  /** More of the service's environment. */
  env?: Record<string, string>;
  /** Opened once the queue is preloaded and the service paused, before the resume. */
  open(service: ServiceProcess, db: TestDatabase, signal: AbortSignal): Promise<void>;
  /**
   * Once every vote is visible (`expected`: the totals, `{law: [oui, non]}`): its latency figures, notes, and
   * problems (which make the row inexact).
   */
  close(seconds: number, expected: Record<string, [number, number]>, signal: AbortSignal): Promise<AudienceReport>;
}

/** What an {@link Audience} saw. */
export interface AudienceReport {
  p50?: number;
  p99?: number;
  max?: number;
  notes: string[];
  problems: string[];
}

async function run(options: Options, count: number, signal: AbortSignal): Promise<Row> {
  const label = count === 0 ? "drain, no results stream open" : `drain, ${count.toLocaleString("en-US")} subscribers`;
  return await watchedDrain(options, label, count === 0 ? undefined : streamAudience(options, count, label), signal);
}

/**
 * The drain of `options.n` preloaded messages on a fresh queue and database, the service started as `deno task
 * start` starts it, watched by `audience` (none: the drain alone): paused, preloaded, the audience opened, resumed;
 * timed from the resume to the last vote visible in `vote_results`.
 */
export async function watchedDrain(
  options: Options,
  label: string,
  audience: Audience | undefined,
  signal: AbortSignal,
): Promise<Row> {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const env = benchEnv(options, db, queue, { ADMIN_TOKEN, ...audience?.env });
  await using service = await spawnService(env, { viaStartTask: true });
  if ((await admin(service, "/pause")).status !== 200) throw new Error("cannot pause the service");
  const votes = benchMix(options, options.n);
  await preload(queue, votes, label, signal);
  await audience?.open(service, db, signal);

  const cpuBefore = cpuSeconds(service.pid) ?? 0;
  const resumedAt = performance.now();
  await admin(service, "/resume");
  let peakRss = 0;
  await untilAllVisible(db, votes, [service], signal, (visible) => {
    peakRss = Math.max(peakRss, peakRssMb(service.pid) ?? 0);
    progress(`${label}: ${visible}/${votes.valid} votes visible`);
  });
  const seconds = (performance.now() - resumedAt) / 1000;
  const cpu = (cpuSeconds(service.pid) ?? 0) - cpuBefore;
  const watched = await audience?.close(seconds, expectedResults(votes), signal) ?? { notes: [], problems: [] };
  const failures = [...watched.problems];
  for (const failure of await stopAndCheck([service], db, queue, votes)) failures.push(`${label}: ${failure}`);
  say(
    `${label}: ${options.n} messages in ${seconds.toFixed(2)} s (${Math.round(options.n / seconds)}/s)` +
      (watched.p50 !== undefined ? `; p50 ${watched.p50.toFixed(0)} ms, p99 ${watched.p99?.toFixed(0)} ms` : ""),
  );
  return drainRow(label, options.n, seconds, failures, {
    p50: watched.p50,
    p99: watched.p99,
    max: watched.max,
    rssMb: peakRss,
    notes: [
      `${label}: the service used ${cpu.toFixed(2)} s of CPU during the drain (${
        (cpu / seconds * 100).toFixed(0)
      } % of one core)`,
      ...watched.notes,
    ],
  });
}

/** `count` results stream subscribers, 20 of them measuring commit → event latency. */
function streamAudience(options: Options, count: number, label: string): Audience {
  const committedAt = new Map<string, number>();
  const measuring: SseClient[] = [];
  const held = new AsyncDisposableStack();
  return {
    env: {
      RESULTS_MAX_CLIENTS: String(Math.max(count + 10, 100)),
      RESULTS_EVENT_INTERVAL_MS: String(options.eventIntervalMs),
    },
    async open(service, db) {
      // The commit times, as a listener of the database hears them.
      const listening = held.adopt(testPool(db.url, 1), (sql) => sql.end({ timeout: 1 }));
      await listening.listen(RESULTS_CHANNEL, (payload) => {
        const now = performance.now();
        for (const { lawId, version } of parseNotification(payload) ?? []) committedAt.set(`${lawId}@${version}`, now);
      });
      const url = `${service.url}/results/stream`;
      for (let i = 0; i < Math.min(count, MEASURING); i++) measuring.push(held.use(await openStream(url)));
      if (count > MEASURING) held.use(await streamCrowd(url, count - MEASURING, true));
      progress(`${label}: ${count} streams open`, true);
    },
    async close(seconds, want, signal) {
      const problems: string[] = [];
      for (const client of measuring) {
        const deadline = performance.now() + 10_000;
        while (!isDeepStrictEqual(client.totals(), want) && performance.now() < deadline) await sleep(20, signal);
        if (!isDeepStrictEqual(client.totals(), want)) {
          problems.push(`${label}: a subscriber did not end on the totals`);
        }
      }
      const latencies = measuring.flatMap((client) => latenciesOf(client, committedAt)).sort((a, b) => a - b);
      const events = measuring.reduce((n, client) => n + client.events.filter((e) => e.event === "totals").length, 0) /
        Math.max(1, measuring.length);
      await held.disposeAsync();
      const at = (q: number) =>
        latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : undefined;
      return {
        p50: at(0.5),
        p99: at(0.99),
        max: latencies.at(-1),
        problems,
        notes: [
          `${label}: latency from each commit (the bench's own LISTEN) to the event bringing it, ${MEASURING} measuring subscribers, ${latencies.length} samples`,
          `${label}: ${Math.round(events)} totals events to each subscriber (${
            (events / seconds).toFixed(1)
          }/s, RESULTS_EVENT_INTERVAL_MS=${options.eventIntervalMs}), ${committedAt.size} law versions committed`,
        ],
      };
    },
  };
}

/** Per law version a subscriber was brought: ms from its commit to the event that carried it (or a later one). */
function latenciesOf(client: SseClient, committedAt: Map<string, number>): number[] {
  const seen = new Map<string, number>();
  const out: number[] = [];
  for (const event of client.events) {
    if (event.event !== "totals") {
      for (const law of JSON.parse(event.data).laws) seen.set(law.law_id, law.version);
      continue;
    }
    for (const law of JSON.parse(event.data).laws as { law_id: string; version: number }[]) {
      for (let v = (seen.get(law.law_id) ?? 0) + 1; v <= law.version; v++) {
        const at = committedAt.get(`${law.law_id}@${v}`);
        if (at !== undefined) out.push(event.receivedAt - at);
      }
      seen.set(law.law_id, Math.max(seen.get(law.law_id) ?? 0, law.version));
    }
  }
  return out;
}
