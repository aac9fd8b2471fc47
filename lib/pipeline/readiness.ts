/**
 * Readiness: whether this instance does its job now, derived from the
 * pipeline's state (`state.ts`) and the broker's connection. `/readyz`,
 * `/status` and the `aggregator_ready` gauge all read it, so they cannot
 * disagree.
 *
 * | state | ready | reason |
 * | --- | --- | --- |
 * | `running`, consuming | yes | — |
 * | `paused` (operator) | yes: a deliberate pause is a working instance | — |
 * | `degraded`, database | no | `database: …` (why commits fail, e.g. the server is read-only; or no answer to the probe) |
 * | `running`, a commit waits for standbys | no | `database: …` (`POSTGRES_MIN_STANDBYS`) |
 * | `degraded`, broker | no | `broker: …` |
 * | `draining` | no: load balancers and Kubernetes stop routing to it | `draining: …` |
 *
 * The database is down for readiness when a commit fails past the retry budget
 * (what stops consumption), or when it does not answer the probe's `select 1`
 * on a connection of its own (`../database/probe.ts`, every second): so an
 * idle instance reports an outage, and its end, within seconds. The probe
 * alone cannot say the database is up: its connection may answer while
 * commits fail; a failing commit wins.
 *
 * @module
 */

import type { State } from "./state.ts";

/** What `/readyz` answers (200 when `ready`, else 503). */
export interface Readiness {
  ready: boolean;
  /** The pipeline's state; `starting` until it runs (`../startup.ts`). */
  state: State["name"] | "starting";
  /** The part that is not ready and why; `null` when ready. */
  reason: string | null;
  broker: "up" | "connected, not consuming" | "down";
  /** `up`; `down: …` while commits fail past the retry budget or the probe gets no answer; `waiting: …` for standbys. */
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
  /** Why the database did not answer its last probe, while it does not (`../database/probe.ts`). */
  readonly probeFailure?: string | undefined;
  /** Set while a committed batch waits, past a short grace, for standbys to flush it (`../database/standbys.ts`). */
  readonly waiting?: string | undefined;
}

/** Readiness in `state` with `broker`; see the module documentation. */
export function readinessOf(state: State, broker: BrokerView, view: DatabaseView = {}): Readiness {
  const commitsFailing = state.name === "degraded" && state.database;
  const unreachable = state.name === "degraded" && state.databaseUnreachable;
  const databaseDown = commitsFailing || unreachable;
  // A commit that went through and now waits for standbys says so, even while an earlier failure of it is retried.
  const database = view.waiting !== undefined
    ? `waiting: ${view.waiting}`
    : commitsFailing
    ? `down: ${view.down ?? "commits fail past the retry budget"}; retrying with backoff`
    : unreachable
    ? `down: no answer to the probe (${view.probeFailure ?? "select 1 failed"})`
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
