/**
 * The chaos soak's fault schedule: which fault, on which instance, when and
 * for how long, derived from the seed alone (no clock, no I/O), so that
 * `--seed` replays the same schedule. It owns the kinds of fault and the rules
 * of which may overlap; doing and undoing them is `faults.ts`.
 *
 * @module
 */

import { seededRandom } from "../../tests/support/random.ts";

/** A kind of fault the soak injects. */
export type FaultKind =
  /** SIGKILL an instance, restart it after the hold. */
  | "kill"
  /** SIGTERM an instance while it consumes (it must exit 0), restart it after the hold. */
  | "sigterm"
  /** Cut one instance's broker connection at its proxy (refused or stalled), restore after the hold. */
  | "cut_broker"
  /** Cut one instance's database connections at its proxy, restore after the hold. */
  | "cut_db"
  /** POST /pause on one instance, /resume after the hold. */
  | "pause"
  /** Add latency to every instance's database proxy, remove it after the hold. */
  | "slow_db"
  /** pg_terminate_backend every backend of the soak's database (instant). */
  | "kill_backends"
  /** Close the soak instances' broker connections from the broker's side (instant). */
  | "close_broker"
  /** Restart PostgreSQL (machine-wide: only with FAULT_RESTARTS=1). */
  | "restart_postgres"
  /** Stop and start the RabbitMQ app (machine-wide: only with FAULT_RESTARTS=1). */
  | "restart_broker";

/** Every kind, in the order the report lists them. */
export const FAULT_KINDS: readonly FaultKind[] = [
  "kill",
  "sigterm",
  "cut_broker",
  "cut_db",
  "pause",
  "slow_db",
  "kill_backends",
  "close_broker",
  "restart_postgres",
  "restart_broker",
];

/** Kinds that act on one instance (the others act on all of them, or on a server). */
export const INSTANCE_KINDS: ReadonlySet<FaultKind> = new Set(["kill", "sigterm", "cut_broker", "cut_db", "pause"]);
/** Kinds that stop an instance's process. */
const PROCESS_KINDS: ReadonlySet<FaultKind> = new Set(["kill", "sigterm"]);
/** Kinds that take a server away from everyone. */
const RESTART_KINDS: ReadonlySet<FaultKind> = new Set(["restart_postgres", "restart_broker"]);
/**
 * Kinds no server restart overlaps: another restart, a process fault (the drain and the instance's
 * start need both servers), and the faults that ask the servers themselves (rabbitmqctl, pg_stat_activity).
 */
const APART_FROM_RESTARTS: ReadonlySet<FaultKind> = new Set([
  ...RESTART_KINDS,
  "kill",
  "sigterm",
  "close_broker",
  "kill_backends",
]);

/** One planned fault. */
export interface PlannedFault {
  /** 1, 2, … in order of start. */
  id: number;
  kind: FaultKind;
  /** Milliseconds after the soak's start. */
  atMs: number;
  /** How long it lasts before its undo (0 for instant kinds). */
  holdMs: number;
  /** The instance it acts on, for {@link INSTANCE_KINDS}. */
  instance?: number;
  /** cut_broker / cut_db: refuse connections or stall them (a partition). */
  mode?: "refuse" | "stall";
  /** slow_db: added latency per chunk, each way. */
  latencyMs?: number;
}

/** Options of {@link planSchedule}. */
export interface ScheduleOptions {
  seed: number;
  /** Faults are started within [startMs, endMs). */
  startMs?: number;
  endMs: number;
  instances: number;
  /** Mean time between fault starts. @default 6000 */
  meanGapMs?: number;
  /** Include the machine-wide restarts. @default false */
  restarts?: boolean;
}

/** Relative frequency of each kind. */
const WEIGHTS: Record<FaultKind, number> = {
  kill: 3,
  sigterm: 2,
  cut_broker: 3,
  cut_db: 3,
  pause: 2,
  slow_db: 2,
  kill_backends: 2,
  close_broker: 2,
  restart_postgres: 1,
  restart_broker: 1,
};

/** Hold time range of each kind, in ms. */
const HOLD: Record<FaultKind, [number, number]> = {
  kill: [300, 4000],
  sigterm: [0, 3000],
  cut_broker: [1000, 12_000],
  cut_db: [1000, 12_000],
  pause: [500, 8000],
  slow_db: [2000, 15_000],
  kill_backends: [0, 0],
  close_broker: [0, 0],
  restart_postgres: [0, 0],
  restart_broker: [1000, 5000],
};

/**
 * Time a process fault keeps its instance busy beyond its hold (the SIGTERM's
 * drain, the restart and its migrations), so that no cut or pause is planned on
 * an instance that is not there.
 */
export const RESTART_ALLOWANCE_MS = 8000;
/** Time a restart of a server keeps everything busy beyond its hold. */
export const SERVER_RESTART_ALLOWANCE_MS = 20_000;

/**
 * Plans the faults: start times with exponential gaps (mean `meanGapMs`), a
 * kind by weight, a target instance and a hold from the seed. Faults overlap
 * freely, except: an instance whose process is stopped (kill, SIGTERM, and its
 * restart) gets no other fault meanwhile and the other way round, and a server
 * restart overlaps none of {@link APART_FROM_RESTARTS}. A fault that breaks a rule is not moved but replaced by the next
 * draw, so the plan is the seed's alone.
 */
export function planSchedule(options: ScheduleOptions): PlannedFault[] {
  const random = seededRandom(options.seed);
  const meanGap = options.meanGapMs ?? 6000;
  const kinds = FAULT_KINDS.filter((k) => options.restarts || !RESTART_KINDS.has(k));
  const totalWeight = kinds.reduce((sum, k) => sum + WEIGHTS[k], 0);
  const pickKind = () => {
    let r = random() * totalWeight;
    for (const kind of kinds) if ((r -= WEIGHTS[kind]) < 0) return kind;
    return kinds[kinds.length - 1];
  };
  const between = ([lo, hi]: [number, number]) => Math.round(lo + (hi - lo) * random());

  const plan: PlannedFault[] = [];
  const conflicts = (a: PlannedFault, b: PlannedFault) => {
    if (!overlaps(a, b)) return false;
    const sameInstance = a.instance !== undefined && a.instance === b.instance;
    if (sameInstance && (PROCESS_KINDS.has(a.kind) || PROCESS_KINDS.has(b.kind))) return true;
    if (sameInstance && a.kind === b.kind) return true;
    if (RESTART_KINDS.has(a.kind) && APART_FROM_RESTARTS.has(b.kind)) return true;
    if (RESTART_KINDS.has(b.kind) && APART_FROM_RESTARTS.has(a.kind)) return true;
    return a.kind === "slow_db" && b.kind === "slow_db";
  };

  let at = options.startMs ?? 0;
  for (;;) {
    at += Math.round(-Math.log(1 - random()) * meanGap);
    if (at >= options.endMs) break;
    for (let draw = 0; draw < 8; draw++) {
      const kind = pickKind();
      const fault: PlannedFault = { id: 0, kind, atMs: at, holdMs: between(HOLD[kind]) };
      if (INSTANCE_KINDS.has(kind)) fault.instance = Math.floor(random() * options.instances);
      if (kind === "cut_broker" || kind === "cut_db") fault.mode = random() < 0.7 ? "refuse" : "stall";
      if (kind === "slow_db") fault.latencyMs = between([20, 150]);
      // Every fault is undone before the soak's end.
      fault.holdMs = Math.min(fault.holdMs, Math.max(0, options.endMs - at));
      if (plan.some((other) => conflicts(fault, other))) continue;
      plan.push(fault);
      break;
    }
  }
  plan.forEach((fault, i) => fault.id = i + 1);
  return plan;
}

/** One line of the logged schedule. */
export function describeFault(fault: PlannedFault): string {
  const target = fault.instance === undefined ? "" : ` instance ${fault.instance}`;
  const extra = fault.mode ? ` (${fault.mode})` : fault.latencyMs ? ` (+${fault.latencyMs} ms)` : "";
  const hold = fault.holdMs > 0 ? ` for ${(fault.holdMs / 1000).toFixed(1)} s` : "";
  return `#${fault.id} at ${(fault.atMs / 1000).toFixed(1)} s: ${fault.kind}${target}${extra}${hold}`;
}

/**
 * Until when a fault disturbs the system: its hold, plus the restart it causes;
 * an instant fault counts for a second (its reconnects and retries).
 */
export function busyUntil(fault: PlannedFault): number {
  return fault.atMs + fault.holdMs +
    (PROCESS_KINDS.has(fault.kind) ? RESTART_ALLOWANCE_MS : 0) +
    (RESTART_KINDS.has(fault.kind) ? SERVER_RESTART_ALLOWANCE_MS : 0) + (fault.holdMs === 0 ? 1000 : 0);
}

/** Whether two faults disturb the system at the same time (see {@link busyUntil}). */
export function overlaps(a: PlannedFault, b: PlannedFault): boolean {
  return a.atMs < busyUntil(b) && b.atMs < busyUntil(a);
}

/** How many faults of `plan` overlap at least one other. */
export function overlapping(plan: PlannedFault[]): number {
  return plan.filter((a) => plan.some((b) => a !== b && overlaps(a, b))).length;
}
