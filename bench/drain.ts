/**
 * Phase 2, the drain (and, with `--backlog N`, phase 4): the real service,
 * started as `deno task start` starts it, drains N preloaded messages (5 %
 * duplicate attempts, 1 % malformed), timed from the process start to the last
 * vote visible in `vote_results`; then SIGTERM, and the totals,
 * `duplicate_attempts` and the DLQ are checked exactly. Peak RSS (VmHWM) is
 * sampled throughout.
 *
 * @module
 */

import { createTestDatabase, createTestQueue } from "../tests/support/servers.ts";
import { peakRssMb, pidsNamed, totalCpuSeconds, treeCpuSeconds } from "../tests/support/process.ts";
import { spawnService } from "../tests/support/service.ts";
import {
  benchEnv,
  benchMix,
  drainRow,
  type Options,
  preload,
  serviceBackends,
  stopAndCheck,
  untilAllVisible,
} from "./common.ts";
import { progress, type Row, say } from "./report.ts";

/** Runs a drain of `n` preloaded messages. */
export async function drain(options: Options, n: number, label: string, signal: AbortSignal): Promise<Row> {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const votes = benchMix(options, n);
  await preload(queue, votes, label, signal);

  await using service = await spawnService(benchEnv(options, db, queue), { viaStartTask: true, waitHealthy: false });
  let firstVisibleAt: number | undefined;
  // CPU from the first vote visible on (start-up excluded): the service's, its PostgreSQL backends', the broker's.
  let cpuAtFirst: { service: number; postgres: number; broker: number; visible: number } | undefined;
  let backends: number[] = [];
  const brokers = pidsNamed("beam.smp");
  const brokerCpu = () => totalCpuSeconds(brokers);
  const postgresCpu = () => totalCpuSeconds(backends);
  let peakRss = 0;
  await untilAllVisible(db, votes, [service], signal, async (visible) => {
    const now = performance.now();
    if (visible > 0 && cpuAtFirst === undefined) {
      firstVisibleAt = now;
      backends = await serviceBackends(db);
      cpuAtFirst = { service: treeCpuSeconds(service.pid), postgres: postgresCpu(), broker: brokerCpu(), visible };
    }
    peakRss = Math.max(peakRss, peakRssMb(service.pid) ?? 0);
    const rate = visible / Math.max(0.001, (now - service.startedAt) / 1000);
    progress(
      `${label}: ${visible}/${votes.valid} votes visible, ${Math.round(rate)}/s, RSS peak ${peakRss.toFixed(0)} MB`,
    );
  });
  const lastVisibleAt = performance.now();
  const cpu = { service: treeCpuSeconds(service.pid), postgres: postgresCpu(), broker: brokerCpu() };
  // Messages handled since the first vote visible, counted from the votes (the mix's proportion).
  const messagesSinceFirst = (votes.valid - (cpuAtFirst?.visible ?? 0)) * n / votes.valid;
  const perMessageUs = (seconds: number) => seconds / messagesSinceFirst * 1e6;
  peakRss = Math.max(peakRss, peakRssMb(service.pid) ?? 0);
  const failures = await stopAndCheck([service], db, queue, votes);
  const [{ meanBatch }] = await db.sql<{ meanBatch: number }[]>`
    select avg(batch_size)::float8 as "meanBatch" from aggregation_stats`;
  const seconds = (lastVisibleAt - service.startedAt) / 1000;
  const steady = (lastVisibleAt - (firstVisibleAt ?? lastVisibleAt)) / 1000;
  say(
    `${label}: ${n} messages in ${seconds.toFixed(2)} s from process start (${Math.round(n / seconds)}/s); ` +
      `first vote visible after ${((firstVisibleAt! - service.startedAt) / 1000).toFixed(2)} s, ` +
      `then ${steady > 0 ? Math.round(votes.valid / steady) : "∞"} votes/s; peak RSS ${
        peakRss.toFixed(0)
      } MB; exit ${service.exitCode}`,
  );
  for (const failure of failures) say(`${label}: NOT EXACT: ${failure}`);
  return drainRow(label, n, seconds, failures, {
    rssMb: peakRss,
    consumerUs: cpuAtFirst && perMessageUs(cpu.service - cpuAtFirst.service),
    postgresUs: cpuAtFirst && perMessageUs(cpu.postgres - cpuAtFirst.postgres),
    meanBatch,
    notes: [
      `${label}: CPU per message from the first vote visible: service ${
        cpuAtFirst ? perMessageUs(cpu.service - cpuAtFirst.service).toFixed(1) : "?"
      } µs, its ${backends.length} PostgreSQL backends ${
        cpuAtFirst ? perMessageUs(cpu.postgres - cpuAtFirst.postgres).toFixed(1) : "?"
      } µs, RabbitMQ ${
        cpuAtFirst && brokers.length ? perMessageUs(cpu.broker - cpuAtFirst.broker).toFixed(1) : "?"
      } µs (the broker's whole process: other users' traffic included)`,
      `${label}: ${votes.valid} valid, ${votes.duplicates} duplicate, ${votes.malformed} malformed; startup (spawn → first vote visible) ${
        ((firstVisibleAt! - service.startedAt) / 1000).toFixed(2)
      } s`,
    ],
  });
}
