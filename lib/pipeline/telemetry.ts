/**
 * Telemetry: the totals since start, and everything derived from them — the
 * Prometheus series, the gauges that describe the present, and the progress
 * line logged at most once a second.
 *
 * One set of {@link Totals} is kept; the counters move with it, and the
 * progress line is the difference between two snapshots of it.
 *
 * It does not decide anything: the stages tell it what happened.
 *
 * @module
 */

import { getLogger } from "../log.ts";
import { rejectionErrorType } from "../metrics/labels.ts";
import type { Metrics } from "../metrics/registry.ts";
import type { RejectReason } from "../vote.ts";
import type { CommitPart, CommitResult } from "../database/writer.ts";
import type { Batch } from "./message.ts";
import { STATE_NAMES, type StateName } from "./state.ts";

const log = getLogger("aggregator");

/** The `law_id` label of the laws beyond `METRICS_MAX_LAWS`. */
export const OTHER_LAW = "other";

/** Totals since start, as `/status` reports them. */
export interface Totals {
  batches: number;
  messages: number;
  counted: number;
  duplicates: number;
  redelivered: number;
  deadLettered: number;
}

/** What the gauges show of the present. */
export interface Present {
  state: StateName;
  /** As `/readyz` answers it (`readiness.ts`). */
  ready: boolean;
  consuming: boolean;
  openMessages: number;
  committingBatches: number;
  poolSize: number;
  /** `performance.now()` at receipt of the oldest message not yet acknowledged, if any. */
  oldestReceivedAt: number | undefined;
}

/** Totals, metrics and the progress line; see the module documentation. */
export class Telemetry {
  readonly #metrics: Metrics;
  readonly totals: Totals = { batches: 0, messages: 0, counted: 0, duplicates: 0, redelivered: 0, deadLettered: 0 };
  #lastCommitAt: Date | null = null;
  #lastLogAt = 0;
  /** `totals` when the last progress line was logged: the next line reports the difference. */
  #loggedTotals: Totals | undefined;

  readonly #maxLaws: number;
  /** Laws with series of their own, up to `maxLaws`. */
  readonly #laws = new Set<string>();
  #warnedOther = false;

  /** @param maxLaws distinct laws with series of their own (`METRICS_MAX_LAWS`); the rest share `other` */
  constructor(metrics: Metrics, maxLaws = 1000) {
    this.#metrics = metrics;
    this.#maxLaws = maxLaws;
    // Every state's series from the start, at 0: the registry does not know the pipeline's states.
    for (const state of STATE_NAMES) metrics.consumerState.set({ state }, 0);
  }

  /** When a batch was last committed. */
  get lastCommitAt(): Date | null {
    return this.#lastCommitAt;
  }

  /** A message was rejected (not a vote, or refused by the database), counted as the seed counted it. */
  rejected(reason: RejectReason): void {
    this.#metrics.aggregationErrors.inc({ error_type: rejectionErrorType(reason) });
  }

  /** A dead-letter copy was confirmed stored. */
  deadLettered(reason: RejectReason): void {
    this.#metrics.deadLettered.inc({ reason });
    this.totals.deadLettered += 1;
  }

  /** Something failed; `type` is the `error_type` label. */
  error(type: string): void {
    this.#metrics.aggregationErrors.inc({ error_type: type });
  }

  /** A transaction whose attempt had timed out committed after all: what it counted is counted here. */
  lateCommitted(part: CommitPart): void {
    this.#countLaws(part);
    this.totals.counted += part.counted;
    this.totals.duplicates += part.duplicates;
    // The retry reported these votes as redeliveries.
    this.totals.redelivered -= part.counted + part.duplicates;
    if (part.duplicates) this.#metrics.duplicateAttempts.inc(part.duplicates);
  }

  /** A batch's transaction committed; `commitSeconds` is how long the writer took. */
  committed(batch: Batch, result: CommitResult, commitSeconds: number): void {
    const m = this.#metrics;
    this.#countLaws(result);
    m.batchCommitSeconds.observe(commitSeconds);
    m.batchSizeProcessed.inc(batch.messages.length);
    m.batchSize.observe(batch.messages.length);
    if (result.duplicates) m.duplicateAttempts.inc(result.duplicates);
    if (result.redelivered) m.redeliveredNoops.inc(result.redelivered);

    const t = this.totals;
    t.batches += 1;
    t.messages += batch.messages.length;
    t.counted += result.counted;
    t.duplicates += result.duplicates;
    t.redelivered += result.redelivered;
    this.#lastCommitAt = new Date();
    this.#logProgress();
  }

  /** A batch was acknowledged (or settled for redelivery): the seed's "time to process last batch". */
  settled(batch: Batch): void {
    this.#metrics.batchProcessingDuration.set((performance.now() - batch.closedAt) / 1000);
  }

  /** Brings the gauges that describe the present up to date. */
  refresh(present: Present): void {
    const m = this.#metrics;
    for (const s of STATE_NAMES) m.consumerState.set({ state: s }, s === present.state ? 1 : 0);
    m.ready.set(present.ready ? 1 : 0);
    m.consumerPaused.set(present.consuming ? 0 : 1);
    m.openBatchVotes.set(present.openMessages);
    m.committingBatches.set(present.committingBatches);
    // Deprecated names, kept for one release (docs/operations.md, Metrics): in_use always counted committing batches.
    m.dbPoolConnections.set({ state: "in_use" }, present.committingBatches);
    m.dbPoolConnections.set({ state: "max" }, present.poolSize);
    const oldest = present.oldestReceivedAt;
    m.oldestUnackedSeconds.set(oldest === undefined ? 0 : (performance.now() - oldest) / 1000);
  }

  #countLaws(part: CommitPart): void {
    const m = this.#metrics;
    for (const law of part.laws) {
      const lawId = this.#label(law.lawId);
      if (law.ouiAdded) m.votesAggregated.inc({ law_id: lawId, choice: "oui" }, law.ouiAdded);
      if (law.nonAdded) m.votesAggregated.inc({ law_id: lawId, choice: "non" }, law.nonAdded);
      // A total of many laws summed is no total of any: "other" has counters only.
      if (lawId === OTHER_LAW) continue;
      m.currentVoteTotals.set({ law_id: lawId, choice: "oui" }, law.ouiCount);
      m.currentVoteTotals.set({ law_id: lawId, choice: "non" }, law.nonCount);
    }
  }

  /** The `law_id` label of `lawId`: its own until `maxLaws` laws have one, then {@link OTHER_LAW}. */
  #label(lawId: string): string {
    if (this.#laws.has(lawId)) return lawId;
    if (this.#laws.size < this.#maxLaws) {
      this.#laws.add(lawId);
      return lawId;
    }
    if (!this.#warnedOther) {
      this.#warnedOther = true;
      log.warn(
        'More than {max} distinct laws: the per-law metrics of the others are summed under law_id="other" (METRICS_MAX_LAWS); vote_results has them all',
        { max: this.#maxLaws },
      );
    }
    return OTHER_LAW;
  }

  #logProgress(): void {
    const now = performance.now();
    if (now - this.#lastLogAt < 1000) return;
    const t = this.totals;
    const last = this.#loggedTotals;
    const since = (key: keyof Totals) => t[key] - (last?.[key] ?? 0);
    log.info(
      "Committed {batches} batch(es): {counted} votes counted, {duplicates} duplicate attempts, {redelivered} redelivered, {deadLettered} dead-lettered",
      {
        batches: since("batches"),
        counted: since("counted"),
        duplicates: since("duplicates"),
        redelivered: since("redelivered"),
        deadLettered: since("deadLettered"),
      },
    );
    this.#lastLogAt = now;
    this.#loggedTotals = { ...t };
  }
}
