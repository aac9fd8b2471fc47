/**
 * The shape of `/status`: what an operator reads of one instance, gathered
 * from the stages that know it. It computes nothing of its own and owns no
 * state; readiness is `readiness.ts`'s, the totals `telemetry.ts`'s.
 *
 * @module
 */

import type { Readiness } from "./readiness.ts";
import type { StateName } from "./state.ts";
import type { Totals } from "./telemetry.ts";

/** What `/status` shows. */
export interface Status {
  /** The pipeline's state; `starting` until it runs. */
  state: StateName | "starting";
  /** As `/readyz` answers it. */
  ready: boolean;
  /** Why not ready (the part and what is wrong); `null` when ready. */
  not_ready_reason: string | null;
  /** True while the broker delivers to this instance (false while paused, degraded or draining). */
  consuming: boolean;
  open_batch_messages: number;
  open_batch_age_seconds: number;
  inflight_batches: number;
  last_commit_at: string | null;
  broker_connected: boolean;
  /** `host:port` of the RabbitMQ node the session is on; `null` while disconnected. */
  broker_node: string | null;
  /** `host:port` of the PostgreSQL server written to (one of the configured hosts); `null` while none answers. */
  database_host: string | null;
  database_failing: boolean;
  totals: Totals;
}

/** The parts {@link statusOf} reads. */
export interface StatusParts {
  readiness: Readiness;
  broker: { readonly connected: boolean; readonly consuming: boolean; readonly node?: string | undefined };
  /** Messages in the open batch, and `performance.now()` at its first one (0 when empty). */
  openBatch: { messages: number; openedAt: number };
  /** Closed batches not yet acknowledged. */
  inflightBatches: number;
  lastCommitAt: Date | null;
  databaseHost?: string | undefined;
  databaseFailing: boolean;
  totals: Totals;
}

/** `/status` from its parts. */
export function statusOf(parts: StatusParts): Status {
  const { openedAt } = parts.openBatch;
  return {
    state: parts.readiness.state,
    ready: parts.readiness.ready,
    not_ready_reason: parts.readiness.reason,
    consuming: parts.broker.consuming,
    open_batch_messages: parts.openBatch.messages,
    open_batch_age_seconds: openedAt ? Math.round(performance.now() - openedAt) / 1000 : 0,
    inflight_batches: parts.inflightBatches,
    last_commit_at: parts.lastCommitAt?.toISOString() ?? null,
    broker_connected: parts.broker.connected,
    broker_node: parts.broker.node ?? null,
    database_host: parts.databaseHost ?? null,
    database_failing: parts.databaseFailing,
    totals: { ...parts.totals },
  };
}
