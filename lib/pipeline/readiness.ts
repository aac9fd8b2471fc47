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
 * | `degraded`, database | no | `database: …` |
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
  /** `up`, or `down: …` while commits fail past the retry budget. */
  database: string;
}

/** The broker as readiness sees it. */
export interface BrokerView {
  readonly connected: boolean;
  readonly consuming: boolean;
}

/** Readiness in `state` with `broker`; see the module documentation. */
export function readinessOf(state: State, broker: BrokerView): Readiness {
  const databaseDown = state.name === "degraded" && state.database;
  const database = databaseDown ? "down: commits fail past the retry budget; retrying with backoff" : "up";
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
  } else if (databaseDown) reason = `database: ${database.slice("down: ".length)}`;
  else if (brokerState !== "up") reason = `broker: ${brokerState}`;
  return { ready: reason === null, state: state.name, reason, broker: brokerState, database };
}
