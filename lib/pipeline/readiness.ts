/**
 * Readiness: whether this instance does its job now, derived from the
 * pipeline's state (`state.ts`) and the broker, never from a separate probe.
 * `/readyz`, `/status` and the `aggregator_ready` gauge all read it, so they
 * cannot disagree.
 *
 * | state | ready | reason |
 * | --- | --- | --- |
 * | `running`, consuming | yes | — |
 * | `paused` (operator) | yes: a deliberate pause is a working instance | — |
 * | `degraded`, database | no | `database: …` (why commits fail: e.g. the server is read-only) |
 * | `running`, a commit waits for standbys | no | `database: …` (`POSTGRES_MIN_STANDBYS`) |
 * | `degraded`, broker | no | `broker: …` |
 * | `draining` | no: load balancers and Kubernetes stop routing to it | `draining: …` |
 *
 * Why not `select 1` on the pool, as before: it answered while commits failed
 * (another connection, or no commit attempted yet) and so reported the
 * database up while consumption was paused for it. A commit failing past the
 * retry budget is what stops the service; that is what readiness reports.
 *
 * @module
 */

import type { State } from "./state.ts";

/** What `/readyz` answers (200 when `ready`, else 503). */
export interface Readiness {
  ready: boolean;
  state: State["name"];
  /** The part that is not ready and why; `null` when ready. */
  reason: string | null;
  broker: "up" | "connected, not consuming" | "down";
  /** `up`, `down: …` while commits fail past the retry budget, or `waiting: …` for standbys. */
  database: string;
}

/** The broker as readiness sees it. */
export interface BrokerView {
  readonly connected: boolean;
  readonly consuming: boolean;
}

/** The database as readiness sees it, beyond the state: why it is down, what a commit waits for. */
export interface DatabaseView {
  /** Why commits fail, while they do (`outage.ts`). */
  readonly down?: string | undefined;
  /** Set while a committed batch waits, past a short grace, for standbys to flush it (`../database/standbys.ts`). */
  readonly waiting?: string | undefined;
}

/** Readiness in `state` with `broker`; see the module documentation. */
export function readinessOf(state: State, broker: BrokerView, view: DatabaseView = {}): Readiness {
  const databaseDown = state.name === "degraded" && state.database;
  // A commit that went through and now waits for standbys says so, even while an earlier failure of it is retried.
  const database = view.waiting !== undefined
    ? `waiting: ${view.waiting}`
    : databaseDown
    ? `down: ${view.down ?? "commits fail past the retry budget"}; retrying with backoff`
    : "up";
  // Consumption is off by design while paused or draining; otherwise a connected broker must be consuming.
  const consumingExpected = state.name === "running";
  // The state's fact wins over the session's flag: both move on the same event, the state is what stops consumption.
  const brokerDown = !broker.connected || (state.name === "degraded" && state.broker);
  const brokerState = brokerDown ? "down" : broker.consuming || !consumingExpected ? "up" : "connected, not consuming";
  let reason: string | null = null;
  if (state.name === "draining") {
    reason = state.abandoned
      ? "draining: stopping; the drain deadline passed, uncommitted votes will be redelivered"
      : "draining: stopping; committing what is batched";
  } else if (databaseDown || view.waiting !== undefined) reason = `database: ${database.replace(/^\w+: /, "")}`;
  else if (brokerState !== "up") reason = `broker: ${brokerState}`;
  return { ready: reason === null, state: state.name, reason, broker: brokerState, database };
}
