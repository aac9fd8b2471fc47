/**
 * The pipeline, wired: the path of a vote from delivery to acknowledgement.
 * Read the stages in this order:
 *
 * 1. `message.ts` — a delivery is parsed; a message that is not a vote has its
 *    dead-letter copy sent at once and rides on in its batch.
 * 2. `scheduler.ts` (with `batcher.ts`) — messages gather in the open batch;
 *    closed batches are committed, up to `maxInflightBatches` at a time.
 * 3. `outage.ts` — the commit (`../database/writer.ts`), retried through database
 *    outages with consumption paused.
 * 4. `dead_letters.ts` — votes the database refused are dead-lettered; a batch
 *    whose dead-letter copies were not all confirmed is not acknowledged.
 * 5. `acker.ts` — acknowledged in delivery order, one `multiple` ack a batch.
 *
 * Beside them: `state.ts` (running, paused, degraded, draining, and why consumption is paused), `telemetry.ts`
 * (totals and metrics), `status.ts`, `readiness.ts`, `tracing.ts` (a span per batch). `../service.ts` builds
 * it (`new Aggregator({broker, writer, metrics, batchSize, batchTimeoutMs})`) and hands it every delivery.
 *
 * @module
 */

import type { Delivery } from "../broker/delivery.ts";
import { getLogger } from "../log.ts";
import type { Metrics } from "../metrics/registry.ts";
import type { CommitPart } from "../database/writer.ts";
import { TimeoutError, withTimeout } from "../timeout.ts";
import { Acker, type Acknowledger } from "./acker.ts";
import { type DeadLetterBroker, DeadLetters } from "./dead_letters.ts";
import { type Batch, toMessage, votesOf } from "./message.ts";
import { type Committed, OutageGuard, type Writer } from "./outage.ts";
import { type Readiness, readinessOf } from "./readiness.ts";
import { Scheduler } from "./scheduler.ts";
import { type PipelineEvent, PipelineState, type StateName } from "./state.ts";
import { type Status, statusOf } from "./status.ts";
import { Telemetry, type Totals } from "./telemetry.ts";
import { BatchTracer } from "./tracing.ts";

export type { Readiness, Status, Totals, Writer };

const log = getLogger("aggregator");

/** Longest {@link Aggregator.pause} waits for the commit of what is batched (`POST /pause` answers within 1 s). */
export const PAUSE_WAIT_MS = 500;

/** What the pipeline needs of the broker (implemented by `BrokerSession`). */
export interface Broker extends Acknowledger, DeadLetterBroker {
  readonly connected: boolean;
  readonly consuming: boolean;
  /** `host:port` of the node the session is on, when known. */
  readonly node?: string | undefined;
  setPaused(paused: boolean): Promise<void>;
}

/** Options of {@link Aggregator}. */
export interface AggregatorOptions {
  broker: Broker;
  writer: Writer;
  metrics: Metrics;
  /** Messages that close a batch. */
  batchSize: number;
  /** Milliseconds after its first message that a batch closes. */
  batchTimeoutMs: number;
  /** Closed batches committing at once. @default 1 */
  maxInflightBatches?: number;
  /** Pool size, reported in `db_pool_connections{state="max"}`. @default 10 */
  poolSize?: number;
  /** First delay between commit attempts while the database is down (ms); doubles up to 3 s. @default 1000 */
  retryDelayMs?: number;
  /** Laws with metric series of their own. @default 1000 */
  metricsMaxLaws?: number;
  /** The database server in use and what a commit waits for (`/status`, readiness). */
  database?: { readonly host?: string | undefined; readonly waiting?: string | undefined };
}

/** The pipeline (see the module doc); dispatches `acked` each time committed batches are acknowledged. */
export class Aggregator extends EventTarget {
  readonly #broker: Broker;
  readonly #state = new PipelineState();
  readonly #telemetry: Telemetry;
  readonly #acker: Acker;
  readonly #deadLetters: DeadLetters;
  readonly #outage: OutageGuard;
  readonly #scheduler: Scheduler<Committed | undefined>;
  readonly #poolSize: number;
  readonly #database: NonNullable<AggregatorOptions["database"]>;
  readonly #tracer = new BatchTracer();
  /** Why the database did not answer its last probe; `undefined` while it does. */
  #probeFailure: string | undefined;

  constructor(options: AggregatorOptions) {
    super();
    this.#broker = options.broker;
    this.#poolSize = options.poolSize ?? 10;
    this.#database = options.database ?? {};
    this.#telemetry = new Telemetry(options.metrics, options.metricsMaxLaws);
    this.#acker = new Acker(options.broker);
    this.#deadLetters = new DeadLetters(options.broker, this.#telemetry);
    this.#outage = new OutageGuard({
      writer: options.writer,
      retryDelayMs: options.retryDelayMs,
      onDatabaseChange: (down) => void this.#transition(down ? "database_down" : "database_up").catch(() => {}),
      onFailedAttempt: () => this.#telemetry.error("database"),
      abandoned: () => this.#state.abandoned,
    });
    this.#scheduler = new Scheduler({
      batchSize: options.batchSize,
      batchTimeoutMs: options.batchTimeoutMs,
      maxInflightBatches: options.maxInflightBatches,
      onClose: (batch) => this.#acker.track(batch),
      commit: (batch) => {
        this.#tracer.started(batch);
        return this.#tracer.failing(batch, this.#outage.commit(votesOf(batch), batch.openedAt));
      },
      onCommitted: (batch, result) => this.#committed(batch, result),
      onError: (error) => log.error("Batch handling failed: {error}", { error }),
    });
    this.refreshGauges();
  }

  /** The current state's name. */
  get state(): StateName {
    return this.#state.current.name;
  }

  /** True while a commit keeps failing past the retry budget. */
  get databaseFailing(): boolean {
    return this.#state.databaseDown;
  }

  /** Whether the instance does its job now, and if not which part is why (`readiness.ts`). */
  readiness(): Readiness {
    return readinessOf(this.#state.current, this.#broker, {
      down: this.#outage.reason,
      probeFailure: this.#probeFailure,
      waiting: this.#database.waiting,
    });
  }

  /** Totals since start. */
  get totals(): Totals {
    return this.#telemetry.totals;
  }

  /** Takes one message from the broker. Never throws: a bad message is dead-lettered. */
  receive(delivery: Delivery): void {
    const message = toMessage(delivery, this.#deadLetters.send);
    if (message.rejection) {
      log.debug("Rejected message {tag}: {reason} ({detail})", { tag: delivery.tag, ...message.rejection });
    }
    this.#scheduler.add(message);
  }

  /** What a timed-out transaction committed after all (see `VoteWriterOptions.onLateCommit`). */
  lateCommitted(part: CommitPart): void {
    this.#telemetry.lateCommitted(part);
  }

  /**
   * The database's probe (`../database/probe.ts`) got no answer (`failure` says why) or got one again (`undefined`):
   * readiness follows within seconds, whether or not votes are flowing.
   */
  databaseProbed(failure: string | undefined): void {
    this.#probeFailure = failure;
    this.#state.apply(failure === undefined ? "database_reachable" : "database_unreachable");
    if (failure === undefined) this.#outage.serverAnswers();
    this.refreshGauges();
  }

  /** The broker's session opened or was lost. */
  brokerChanged(connected: boolean): void {
    this.#state.apply(connected ? "broker_up" : "broker_down");
    this.refreshGauges();
  }

  /**
   * Closes the open batch and resolves once it (and every batch before it) is
   * committed and acknowledged.
   *
   * @returns how many messages the open batch held
   */
  async flush(): Promise<number> {
    const flushed = this.#scheduler.close();
    await this.#acker.settled();
    return flushed;
  }

  /**
   * Stops taking messages (operator pause; survives reconnects) and closes the open batch, so that what is batched
   * is committed; waits for that at most `waitMs`, so that the answer never waits on a database or broker outage.
   * What is not committed by then goes on being committed (through the outage), and stays unacknowledged until it is.
   *
   * @returns how many messages the open batch held, and whether everything received was committed by `waitMs`
   * @throws {IllegalTransitionError} while draining
   */
  async pause(waitMs = PAUSE_WAIT_MS): Promise<{ flushed: number; committed: boolean }> {
    const deadline = performance.now() + waitMs;
    // The state changes at once; the broker's confirmation of the cancelled consumer may take as long as the broker.
    await settledWithin(this.#transition("operator_pause"), waitMs);
    const flushed = this.#scheduler.close();
    const committed = await settledWithin(this.#acker.settled(), deadline - performance.now());
    return { flushed, committed };
  }

  /** Takes messages again after {@link pause}. */
  async resume(): Promise<void> {
    await this.#transition("operator_resume");
  }

  /**
   * Graceful stop: stops consuming, commits and acknowledges what is batched.
   *
   * @param timeoutMs longest wait for the last commit
   * @returns true when everything received was committed and acknowledged
   */
  async drain(timeoutMs: number): Promise<boolean> {
    const committed = (async () => {
      await this.#transition("drain").catch(() => {});
      await this.flush();
    })();
    try {
      await withTimeout(committed, timeoutMs, `drain not done in ${timeoutMs} ms`);
      return true;
    } catch (error) {
      if (!(error instanceof TimeoutError)) throw error;
      // Nothing received is waiting (an idle service, a zero deadline): the drain is complete, not failed.
      if (this.#acker.length === 0 && this.#scheduler.openMessages === 0) return true;
      this.#state.apply("abandon");
      return false;
    }
  }

  /** Status for `/status`. */
  status(): Status {
    return statusOf({
      readiness: this.readiness(),
      broker: this.#broker,
      openBatch: { messages: this.#scheduler.openMessages, openedAt: this.#scheduler.openedAt },
      inflightBatches: this.#acker.length,
      lastCommitAt: this.#telemetry.lastCommitAt,
      databaseHost: this.#database.host,
      databaseFailing: this.databaseFailing,
      totals: this.totals,
    });
  }

  /** Brings the gauges that describe the present up to date (called before each scrape). */
  refreshGauges(): void {
    this.#telemetry.refresh({
      state: this.state,
      ready: this.readiness().ready,
      consuming: this.#broker.consuming,
      openMessages: this.#scheduler.openMessages,
      committingBatches: this.#scheduler.committing,
      poolSize: this.#poolSize,
      oldestReceivedAt: this.#acker.oldestReceivedAt ?? (this.#scheduler.openedAt || undefined),
    });
  }

  /** Applies `event` and tells the broker whether to consume. */
  async #transition(event: PipelineEvent): Promise<void> {
    this.#state.apply(event);
    this.refreshGauges();
    await this.#broker.setPaused(this.#state.pauseReasons.size > 0);
  }

  /** After the commit: dead-letters what the database refused, records, and acknowledges in order. */
  async #committed(batch: Batch, committed: Committed | undefined): Promise<void> {
    if (committed === undefined) { // abandoned at shutdown: not acknowledged, so redelivered
      this.#tracer.failed(batch, "abandoned at shutdown: left unacknowledged, to be redelivered");
      return;
    }
    const { result, seconds } = committed;
    await this.#tracer.failing(batch, this.#deadLetters.settle(batch, result));
    this.#telemetry.committed(batch, result, seconds);
    batch.committed = true;
    const settled = this.#acker.acknowledgeCommitted();
    this.#tracer.committed(batch, committed);
    if (settled.length) this.#telemetry.settled(settled.at(-1)!);
    this.refreshGauges();
    this.dispatchEvent(new Event("acked"));
  }
}

/** Whether `promise` resolved within `ms`; its rejection is thrown, its lateness is `false` (it goes on). */
async function settledWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  try {
    await withTimeout(promise, Math.max(0, ms), "");
    return true;
  } catch (error) {
    if (error instanceof TimeoutError) return false;
    throw error;
  }
}
