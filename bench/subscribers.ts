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
import { createTestDatabase, createTestQueue, testPool } from "../tests/support/servers.ts";
import { cpuSeconds, peakRssMb } from "../tests/support/process.ts";
import { admin, ADMIN_TOKEN, spawnService } from "../tests/support/service.ts";
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

async function run(options: Options, count: number, signal: AbortSignal): Promise<Row> {
  const label = count === 0 ? "drain, no results stream open" : `drain, ${count.toLocaleString("en-US")} subscribers`;
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const env = benchEnv(options, db, queue, {
    ADMIN_TOKEN,
    RESULTS_MAX_CLIENTS: String(Math.max(count + 10, 100)),
    RESULTS_EVENT_INTERVAL_MS: String(options.eventIntervalMs),
  });
  await using service = await spawnService(env, { viaStartTask: true });
  if ((await admin(service, "/pause")).status !== 200) throw new Error("cannot pause the service");
  const votes = benchMix(options, options.n);
  await preload(queue, votes, label, signal);

  // The commit times, as a listener of the database hears them.
  const committedAt = new Map<string, number>();
  const listening = testPool(db.url, 1);
  await listening.listen(RESULTS_CHANNEL, (payload) => {
    const now = performance.now();
    for (const { lawId, version } of parseNotification(payload) ?? []) committedAt.set(`${lawId}@${version}`, now);
  });

  const url = `${service.url}/results/stream`;
  const measuring: SseClient[] = [];
  for (let i = 0; i < Math.min(count, MEASURING); i++) measuring.push(await openStream(url));
  await using _crowd = count > MEASURING ? await streamCrowd(url, count - MEASURING, true) : undefined;
  progress(`${label}: ${count} streams open`, true);

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
  const expected = expectedResults(votes);
  const failures: string[] = [];
  for (const client of measuring) {
    const deadline = performance.now() + 10_000;
    while (!isDeepStrictEqual(client.totals(), expected) && performance.now() < deadline) await sleep(20, signal);
    if (!isDeepStrictEqual(client.totals(), expected)) {
      failures.push(`${label}: a subscriber did not end on the totals`);
    }
  }
  const latencies = measuring.flatMap((client) => latenciesOf(client, committedAt));
  const events = measuring.reduce((n, client) => n + client.events.filter((e) => e.event === "totals").length, 0) /
    Math.max(1, measuring.length);
  for (const client of measuring) await client.close();
  await listening.end({ timeout: 1 });
  for (const failure of await stopAndCheck([service], db, queue, votes)) failures.push(`${label}: ${failure}`);
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : undefined;
  say(
    `${label}: ${options.n} messages in ${seconds.toFixed(2)} s (${Math.round(options.n / seconds)}/s)` +
      (count
        ? `; commit → event p50 ${at(0.5)?.toFixed(0)} ms, p99 ${at(0.99)?.toFixed(0)} ms (${latencies.length} samples)`
        : ""),
  );
  return drainRow(label, options.n, seconds, failures, {
    p50: count ? at(0.5) : undefined,
    p99: count ? at(0.99) : undefined,
    max: count ? latencies.at(-1) : undefined,
    rssMb: peakRss,
    notes: [
      `${label}: the service used ${cpu.toFixed(2)} s of CPU during the drain (${
        (cpu / seconds * 100).toFixed(0)
      } % of one core)`,
      ...(count
        ? [
          `${label}: latency from each commit (the bench's own LISTEN) to the event bringing it, ${MEASURING} measuring subscribers, ${latencies.length} samples`,
          `${label}: ${Math.round(events)} totals events to each subscriber (${
            (events / seconds).toFixed(1)
          }/s, RESULTS_EVENT_INTERVAL_MS=${options.eventIntervalMs}), ${committedAt.size} law versions committed`,
        ]
        : []),
    ],
  });
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
