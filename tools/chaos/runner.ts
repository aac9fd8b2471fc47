/**
 * Runs a fault schedule against the soak's instances: each fault at its time
 * (later only if its target is still busy with an earlier fault), held, undone,
 * and then timed until the system has recovered.
 *
 * Recovery: the time from a fault's undo (the restart command for a kill or a
 * SIGTERM, the undo itself for a cut, a pause or a slow database, the fault
 * itself for instant ones) until every instance it touched has committed a
 * batch again. The publisher keeps them all busy, so an instance that commits
 * nothing is an instance that has not recovered; an overlapping fault on it
 * counts in the time.
 *
 * @module
 */

import { delay } from "../../tests/support/wait.ts";
import { actionFor, type FaultContext } from "./faults.ts";
import { describeFault, INSTANCE_KINDS, type PlannedFault } from "./scheduler.ts";

/** What happened to one planned fault. */
export interface FaultRecord {
  fault: PlannedFault;
  /** How much later than planned it started (its instance was busy). */
  delayedMs: number;
  /** ms after the soak's start. */
  doneAtMs?: number;
  undoneAtMs?: number;
  /** Time from the undo until every instance it touched committed again; undefined if they never did. */
  recoveryMs?: number;
  note?: string;
  error?: string;
}

/** Longest wait for recovery before a fault counts as not recovered. */
export const RECOVERY_LIMIT_MS = 120_000;

/** Longest a fault waits for its instance to be free (or back) before it is skipped, as a problem. */
export const BUSY_LIMIT_MS = 60_000;

/** Kinds that stop the instance's process: nothing else runs on that instance meanwhile. */
const PROCESS = new Set(["kill", "sigterm"]);

/** Runs `plan`; resolves when every fault is undone and timed (or `RECOVERY_LIMIT_MS` passed). */
export async function runSchedule(
  plan: PlannedFault[],
  context: FaultContext,
  startedAt: number,
  log: (line: string) => void,
): Promise<FaultRecord[]> {
  const { instances } = context;
  const now = () => performance.now() - startedAt;
  // Per instance: faults active on it now (a process fault waits for none, the others for no process fault).
  const active = instances.slots.map(() => new Set<PlannedFault>());
  const free = (fault: PlannedFault) => {
    if (fault.instance === undefined) return true;
    const slot = instances.slots[fault.instance];
    const here = [...active[fault.instance]];
    if (PROCESS.has(fault.kind)) return here.length === 0 && slot.service !== undefined;
    return slot.service !== undefined && !here.some((f) => PROCESS.has(f.kind));
  };

  const run = async (fault: PlannedFault): Promise<FaultRecord> => {
    const record: FaultRecord = { fault, delayedMs: 0 };
    await delay(Math.max(0, fault.atMs - now()));
    while (!free(fault) && now() - fault.atMs < BUSY_LIMIT_MS) await delay(50);
    record.delayedMs = Math.max(0, Math.round(now() - fault.atMs));
    if (!free(fault)) {
      record.error = `skipped: instance ${fault.instance} still busy or down ${BUSY_LIMIT_MS / 1000} s after its time`;
      context.problem(`fault #${fault.id} ${fault.kind}: ${record.error}`);
      return record;
    }
    const slots = fault.instance === undefined ? instances.slots : [instances.slots[fault.instance]];
    if (fault.instance !== undefined) active[fault.instance].add(fault);
    const action = actionFor(fault, context);
    try {
      record.doneAtMs = now();
      record.note = (await action.do()) ?? undefined;
      log(
        `[${(now() / 1000).toFixed(1)} s] do   ${describeFault(fault)}${record.note ? ` — ${record.note}` : ""}${
          record.delayedMs > 100 ? ` (${(record.delayedMs / 1000).toFixed(1)} s late)` : ""
        }`,
      );
      await delay(fault.holdMs);
      record.undoneAtMs = now();
      await action.undo();
      if (fault.holdMs > 0 || INSTANCE_KINDS.has(fault.kind)) {
        log(`[${(now() / 1000).toFixed(1)} s] undo #${fault.id} ${fault.kind}`);
      }
    } catch (error) {
      record.error = (error as Error).message;
      context.problem(`fault #${fault.id} ${fault.kind}: ${record.error}`);
      record.undoneAtMs ??= now();
      await Promise.resolve().then(() => action.undo()).catch(() => {});
    } finally {
      if (fault.instance !== undefined) active[fault.instance].delete(fault);
    }
    // Progress at the undo; recovered once each touched instance has gone past it.
    const from = record.undoneAtMs!;
    const baseline = slots.map((slot) => instances.progress(slot));
    while (now() - from < RECOVERY_LIMIT_MS) {
      if (slots.every((slot, i) => instances.progress(slot) > baseline[i])) {
        record.recoveryMs = Math.round(now() - from);
        log(`[${(now() / 1000).toFixed(1)} s] recovered #${fault.id} ${fault.kind} in ${record.recoveryMs / 1000} s`);
        break;
      }
      await delay(20);
    }
    if (record.recoveryMs === undefined) {
      context.problem(`fault #${fault.id} ${fault.kind}: not recovered ${RECOVERY_LIMIT_MS / 1000} s after its undo`);
    }
    return record;
  };
  return await Promise.all(plan.map(run));
}
