/**
 * One chaos soak, start to end: a scratch database and queue of its own, N
 * instances behind their proxies, the publisher at a steady rate, the seeded
 * fault schedule; then the faults stop, every proxy is restored, the
 * publisher stops, the queue drains, the instances get SIGTERM, and the end
 * checks run. The result is the summary (`report.ts`).
 *
 * @module
 */

import { createTestDatabase, createTestQueue, FAULT_RESTARTS, untilQueueSettled } from "../../tests/support/servers.ts";
import { Deadline } from "../../tests/support/wait.ts";
import {
  type Check,
  checkCounts,
  checkDeadLetters,
  checkExits,
  checkQueue,
  checkVerify,
  expectedOf,
} from "./checks.ts";
import { Instances } from "./instances.ts";
import { SoakPublisher } from "./publisher.ts";
import type { SoakSummary } from "./report.ts";
import { runSchedule } from "./runner.ts";
import { describeFault, overlapping, type PlannedFault, planSchedule } from "./scheduler.ts";

/** Options of {@link runSoak}. */
export interface SoakOptions {
  seconds: number;
  instances: number;
  seed: number;
  /** Messages per second. */
  rate: number;
  /** Mean time between fault starts. @default seconds/15, from 2 to 6 s */
  meanGapMs?: number;
  /** Where the schedule and progress lines go. */
  log: (line: string) => void;
}

/** Seconds without faults at the start (instances warm) before the schedule begins. */
const WARMUP_MS = 2000;
/** Seconds of faultless load at the end, so the last faults' recovery is timed under load. */
const COOLDOWN_MS = 5000;

/** The fault schedule of a soak with `options` (faults from the warm-up to the cool-down). */
export function soakPlan(
  options: Pick<SoakOptions, "seconds" | "instances" | "seed" | "meanGapMs">,
  restarts: boolean,
): PlannedFault[] {
  const durationMs = options.seconds * 1000;
  return planSchedule({
    seed: options.seed,
    startMs: WARMUP_MS,
    endMs: Math.max(WARMUP_MS + 1000, durationMs - COOLDOWN_MS),
    instances: options.instances,
    meanGapMs: options.meanGapMs ?? Math.min(6000, Math.max(2000, durationMs / 15)),
    restarts,
  });
}

/** Runs one soak; see the module documentation. */
export async function runSoak(options: SoakOptions): Promise<SoakSummary> {
  const { log, seed } = options;
  const durationMs = options.seconds * 1000;
  const plan = soakPlan(options, FAULT_RESTARTS);
  log(`chaos soak: seed ${seed}, ${options.seconds} s, ${options.instances} instances, ${options.rate} msg/s`);
  log(
    FAULT_RESTARTS
      ? "machine-wide faults ON (FAULT_RESTARTS=1): PostgreSQL and RabbitMQ restarts are in the schedule"
      : "machine-wide faults off (set FAULT_RESTARTS=1 on a machine of your own for PostgreSQL/RabbitMQ restarts)",
  );
  log(`schedule (${plan.length} faults, ${overlapping(plan)} overlapping another):`);
  for (const fault of plan) log(`  ${describeFault(fault)}`);

  await using db = await createTestDatabase();
  await using queue = await createTestQueue({ prefix: "chaos" });
  const problems: string[] = [];
  const problem = (message: string) => {
    problems.push(message);
    log(`PROBLEM: ${message}`);
  };
  await using instances = new Instances(options.instances, db, queue, problem);
  await instances.start();
  log(`database ${db.name}, queue ${queue.name}; instances up`);

  // Twice the run's worth of messages can be generated: the publisher runs on through the recovery waits.
  const publisher = new SoakPublisher({ queue: queue.name, seed, rate: options.rate, maxSeconds: options.seconds * 2 });
  const startedAt = performance.now();
  publisher.start();
  const progress = setInterval(() => {
    const elapsed = (performance.now() - startedAt) / 1000;
    const counted = instances.slots.map((s) => instances.progress(s)).join("/");
    log(`[${elapsed.toFixed(0)} s] ${publisher.confirmed} confirmed; batches per instance ${counted}`);
  }, 30_000);

  const sigtermExits: number[] = [];
  const records = await runSchedule(plan, { instances, dbName: db.name, problem, sigtermExits }, startedAt, log);
  const remaining = durationMs - (performance.now() - startedAt);
  if (remaining > 0) await new Promise((resolve) => setTimeout(resolve, remaining));
  clearInterval(progress);
  instances.restoreAll();
  await publisher.stop();
  const faultsEnd = performance.now();
  log(`faults over, publisher stopped at ${publisher.confirmed} confirmed; draining`);

  const checks: Check[] = [];
  const drain = new Deadline("chaos drain", 300_000);
  try {
    await untilQueueSettled(drain, queue.name, 300_000);
  } catch (error) {
    problem(`the queue did not drain: ${(error as Error).message}`);
  }
  const drainSeconds = (performance.now() - faultsEnd) / 1000;
  const finalExits = await instances.stopAll();
  const expected = expectedOf(publisher.votes, publisher.confirmed);
  checks.push(await checkCounts(db, expected));
  checks.push(checkDeadLetters(await queue.takeDeadLetters(), expected));
  checks.push(await checkQueue(queue));
  checks.push(checkExits(sigtermExits, finalExits));
  checks.push(await checkVerify(db, queue));
  checks.push({
    name: "no unexpected exit, every fault done and recovered",
    ok: problems.length === 0,
    detail: problems.length ? problems.map((p) => p.split("\n")[0]).join("; ") : `${records.length} faults`,
  });
  const [{ counted }] = await db.sql<{ counted: number }[]>`
    select coalesce(sum(total_votes), 0)::int as counted from vote_results`;
  return {
    seed,
    instances: options.instances,
    seconds: options.seconds,
    overlapping: overlapping(plan),
    records,
    published: publisher.confirmed,
    valid: expected.valid,
    duplicates: expected.duplicates,
    malformed: expected.malformed.size,
    publishRate: publisher.rate,
    republishedChunks: publisher.republished,
    counted,
    drainSeconds,
    failedStarts: instances.failedStarts,
    checks,
    restarts: FAULT_RESTARTS,
  };
}
