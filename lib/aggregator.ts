/**
 * The pipeline: a message is parsed, waits in the open batch, is committed by
 * the writer, and only then acknowledged.
 *
 * - Closed batches commit up to `maxInflightBatches` at a time, but are
 *   acknowledged strictly in delivery order, each with one `multiple` ack.
 * - A message that is not a vote rides in its batch and is dead-lettered (and
 *   confirmed by the broker) before the batch is acknowledged; so is a vote the
 *   database refuses.
 * - When the database outlasts the writer's retry budget, consumption pauses
 *   (the batch stays unacknowledged) and the commit is retried with capped
 *   backoff until it succeeds; then consumption resumes.
 *
 * @example
 * ```ts
 * import { Aggregator } from "./aggregator.ts";
 * const aggregator = new Aggregator({ broker, writer, metrics, batchSize: 100, batchTimeoutMs: 1000 });
 * // broker.onDelivery = (d) => aggregator.receive(d)
 * await aggregator.flush(); // { flushed: n } once committed and acknowledged
 * ```
 *
 * @module
 */

import { Batcher } from "./batcher.ts";
import type { Delivery } from "./consumer.ts";
import { getLogger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import { STATES } from "./metrics.ts";
import type { Rejection, Vote } from "./vote.ts";
import { delay, TimeoutError, withTimeout } from "./timeout.ts";
import { parseVote } from "./vote.ts";
import type { CommitResult } from "./writer.ts";
import { RetryError } from "./writer.ts";

const log = getLogger("aggregator");

/** What the aggregator needs of the broker (implemented by `BrokerConsumer`). */
export interface Broker {
  /** Number of the current connection; deliveries of older ones can no longer be acknowledged. */
  readonly session: number;
  readonly connected: boolean;
  readonly consuming: boolean;
  ack(session: number, tag: number): boolean;
  deadLetter(delivery: Delivery, rejection: Rejection): Promise<void>;
  setPaused(reason: string, paused: boolean): Promise<void>;
  reconnect(): Promise<void>;
}

/** What the aggregator needs of the writer (implemented by `VoteWriter`). */
export interface Writer {
  commit(votes: Vote[], batchAgeMs: number): Promise<CommitResult>;
}

/** The service's state, as `/status` and `aggregator_state` report it. */
export type State = typeof STATES[number];

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
  /** First delay between commit attempts while the database is down (ms); doubles up to 30 s. @default 1000 */
  retryDelayMs?: number;
}

/** Totals since start, as `/status` reports them. */
export interface Totals {
  batches: number;
  messages: number;
  counted: number;
  duplicates: number;
  redelivered: number;
  deadLettered: number;
}

/** What `/status` shows. */
export interface Status {
  state: State;
  open_batch_messages: number;
  open_batch_age_seconds: number;
  inflight_batches: number;
  last_commit_at: string | null;
  broker_connected: boolean;
  database_failing: boolean;
  totals: Totals;
}

interface Entry {
  delivery: Delivery;
  vote?: Vote;
  rejection?: Rejection;
  /** Settles when the dead-letter publish is confirmed (or failed). */
  deadLettered?: Promise<boolean>;
}

interface Job {
  entries: Entry[];
  /** Hashes of its votes: a later batch with one of them must not commit alongside it. */
  hashes: string[];
  openedAt: number;
  closedAt: number;
  committed: boolean;
  /** False when a dead-letter publish failed: the batch must be redelivered, not acknowledged. */
  ackable: boolean;
  acked: PromiseWithResolvers<void>;
}

const MAX_BACKOFF_MS = 30_000;

/**
 * The pipeline; see the module documentation. Dispatches an `acked` event each
 * time committed batches are acknowledged (for tests and tools that wait on progress).
 */
export class Aggregator extends EventTarget {
  readonly #broker: Broker;
  readonly #writer: Writer;
  readonly #metrics: Metrics;
  readonly #batcher: Batcher<Entry>;
  readonly #maxInflight: number;
  readonly #retryDelayMs: number;
  readonly #poolSize: number;
  /** Closed batches, oldest first, until acknowledged. */
  readonly #jobs: Job[] = [];
  /** Closed batches not yet handed to the writer. */
  readonly #waiting: Job[] = [];
  /** Vote hashes in committing batches, with how many of those hold each. */
  readonly #committingHashes = new Map<string, number>();
  #committing = 0;
  #failingJobs = 0;
  #operatorPaused = false;
  #draining = false;
  /** Set when a drain timed out: commits still retrying give up (their messages are redelivered). */
  #abandoned = false;
  #lastCommitAt: Date | null = null;
  #lastLogAt = 0;
  /** `totals` when the last progress line was logged: the next line reports the difference. */
  #loggedTotals: Totals | undefined;
  readonly totals: Totals = {
    batches: 0,
    messages: 0,
    counted: 0,
    duplicates: 0,
    redelivered: 0,
    deadLettered: 0,
  };

  constructor(options: AggregatorOptions) {
    super();
    this.#broker = options.broker;
    this.#writer = options.writer;
    this.#metrics = options.metrics;
    this.#maxInflight = options.maxInflightBatches ?? 1;
    this.#retryDelayMs = Math.max(1, options.retryDelayMs ?? 1000);
    this.#poolSize = options.poolSize ?? 10;
    this.#batcher = new Batcher<Entry>({
      size: options.batchSize,
      timeoutMs: options.batchTimeoutMs,
      onBatch: (entries) => this.#enqueue(entries),
    });
    this.refreshGauges();
  }

  /** The current state. */
  get state(): State {
    if (this.#draining) return "draining";
    if (this.#failingJobs > 0 || !this.#broker.connected) return "degraded";
    if (this.#operatorPaused) return "paused";
    return "running";
  }

  /** True while a commit keeps failing past the retry budget. */
  get databaseFailing(): boolean {
    return this.#failingJobs > 0;
  }

  /** Takes one message from the broker. Never throws: a bad message is dead-lettered. */
  receive(delivery: Delivery): void {
    const parsed = parseVote(delivery.body);
    const entry: Entry = { delivery };
    if (parsed.ok) {
      entry.vote = parsed.vote;
    } else {
      entry.rejection = parsed.rejection;
      entry.deadLettered = this.#deadLetter(entry, parsed.rejection);
      log.debug("Rejected message {tag}: {reason} ({detail})", {
        tag: delivery.tag,
        ...parsed.rejection,
      });
    }
    this.#batcher.add(entry);
  }

  /**
   * Closes the open batch and resolves once it (and every batch before it) is
   * committed and acknowledged.
   *
   * @returns how many messages the open batch held
   */
  async flush(): Promise<number> {
    const flushed = this.#batcher.close();
    const last = this.#jobs.at(-1);
    if (last) await last.acked.promise;
    return flushed;
  }

  /** Stops taking messages (operator pause; survives reconnects) and commits what is batched. */
  async pause(): Promise<number> {
    this.#operatorPaused = true;
    this.refreshGauges();
    await this.#broker.setPaused("operator", true);
    return await this.flush();
  }

  /** Takes messages again after {@link pause}. */
  async resume(): Promise<void> {
    this.#operatorPaused = false;
    this.refreshGauges();
    await this.#broker.setPaused("operator", false);
  }

  /**
   * Graceful stop: stops consuming, commits and acknowledges what is batched.
   *
   * @param timeoutMs longest wait for the last commit
   * @returns true when everything received was committed and acknowledged
   */
  async drain(timeoutMs: number): Promise<boolean> {
    this.#draining = true;
    this.refreshGauges();
    const committed = (async () => {
      await this.#broker.setPaused("shutdown", true).catch(() => {});
      await this.flush();
    })();
    try {
      await withTimeout(committed, timeoutMs, `drain not done in ${timeoutMs} ms`);
      return true;
    } catch (error) {
      if (!(error instanceof TimeoutError)) throw error;
      this.#abandoned = true;
      return false;
    }
  }

  /** Status for `/status`. */
  status(): Status {
    const openedAt = this.#batcher.openedAt;
    return {
      state: this.state,
      open_batch_messages: this.#batcher.length,
      open_batch_age_seconds: openedAt ? round3((performance.now() - openedAt) / 1000) : 0,
      inflight_batches: this.#jobs.length,
      last_commit_at: this.#lastCommitAt?.toISOString() ?? null,
      broker_connected: this.#broker.connected,
      database_failing: this.databaseFailing,
      totals: { ...this.totals },
    };
  }

  /** Brings the gauges that describe the present up to date (called before each scrape). */
  refreshGauges(): void {
    const m = this.#metrics;
    const state = this.state;
    for (const s of STATES) m.consumerState.set({ state: s }, s === state ? 1 : 0);
    m.consumerPaused.set(this.#broker.consuming ? 0 : 1);
    m.openBatchVotes.set(this.#batcher.length);
    m.dbPoolConnections.set({ state: "in_use" }, this.#committing);
    m.dbPoolConnections.set({ state: "max" }, this.#poolSize);
    const oldest = this.#jobs[0]?.entries[0]?.delivery.receivedAt ?? (this.#batcher.openedAt || undefined);
    m.oldestUnackedSeconds.set(oldest === undefined ? 0 : (performance.now() - oldest) / 1000);
  }

  #deadLetter(entry: Entry, rejection: Rejection): Promise<boolean> {
    return this.#broker.deadLetter(entry.delivery, rejection).then(
      () => {
        this.#metrics.deadLettered.inc({ reason: rejection.reason });
        this.totals.deadLettered += 1;
        return true;
      },
      (error: Error) => {
        this.#metrics.aggregationErrors.inc({ error_type: "dead_letter" });
        log.warn("Dead-letter publish failed ({error}); the message will be redelivered", {
          error: error.message,
        });
        return false;
      },
    );
  }

  #enqueue(entries: Entry[]): void {
    const job: Job = {
      entries,
      hashes: this.#maxInflight > 1 ? entries.flatMap((e) => e.vote ? [e.vote.hash] : []) : [],
      openedAt: entries[0].delivery.receivedAt,
      closedAt: performance.now(),
      committed: false,
      ackable: true,
      acked: Promise.withResolvers<void>(),
    };
    this.#jobs.push(job);
    this.#waiting.push(job);
    this.#pump();
  }

  #pump(): void {
    while (this.#committing < this.#maxInflight && this.#waiting.length > 0) {
      const job = this.#waiting[0];
      // First copy wins: a batch sharing a hash with one still committing waits, or the later copy could
      // commit first. Across instances the commit order decides, as it must.
      if (this.#committing > 0 && job.hashes.some((h) => this.#committingHashes.has(h))) return;
      this.#waiting.shift();
      this.#committing += 1;
      // With one batch at a time there is nothing to hold back, so no bookkeeping.
      if (this.#maxInflight > 1) {
        for (const h of job.hashes) this.#committingHashes.set(h, (this.#committingHashes.get(h) ?? 0) + 1);
      }
      this.#commit(job).catch((error) => log.error("Batch handling failed: {error}", { error }));
    }
  }

  /** Frees the committing slot and the batch's hashes, and starts what waited on them. */
  #release(job: Job): void {
    if (this.#maxInflight > 1) {
      for (const h of job.hashes) {
        const n = this.#committingHashes.get(h)! - 1;
        if (n === 0) this.#committingHashes.delete(h);
        else this.#committingHashes.set(h, n);
      }
    }
    this.#committing -= 1;
    this.#pump();
  }

  async #commit(job: Job): Promise<void> {
    const votes: Vote[] = [];
    const voteEntries: Entry[] = [];
    for (const entry of job.entries) {
      if (entry.vote) {
        votes.push(entry.vote);
        voteEntries.push(entry);
      }
    }
    const result = await this.#commitUntilDone(votes, job);
    this.#release(job);
    if (result === undefined) return; // abandoned at shutdown: not acknowledged, so redelivered
    for (const { index, detail } of result.rejected) {
      const entry = voteEntries[index];
      entry.rejection = { reason: "database_rejected", detail };
      entry.deadLettered = this.#deadLetter(entry, entry.rejection);
      log.warn("The database refused vote {hash}: {detail}; dead-lettered", { hash: entry.vote?.hash, detail });
    }
    const rejected = job.entries.filter((e) => e.deadLettered);
    const deadLettered = await Promise.all(rejected.map((e) => e.deadLettered));
    if (deadLettered.includes(false)) {
      job.ackable = false;
      // A multiple ack would now also settle the message that is not in the DLQ. If its connection is
      // still the current one, drop it so that every unacknowledged message comes back.
      if (rejected.some((e, i) => !deadLettered[i] && e.delivery.session === this.#broker.session)) {
        await this.#broker.reconnect();
      }
    }
    this.#record(job, result);
    job.committed = true;
    this.#acknowledgeInOrder();
  }

  /**
   * Commits, pausing consumption while the database stays down, until it succeeds;
   * `undefined` when a timed-out shutdown abandoned it.
   */
  async #commitUntilDone(votes: Vote[], job: Job): Promise<CommitResult | undefined> {
    let failing = false;
    for (let attempt = 0;; attempt++) {
      if (this.#abandoned) return undefined;
      try {
        const result = await this.#writer.commit(votes, performance.now() - job.openedAt);
        if (failing) {
          this.#failingJobs -= 1;
          if (this.#failingJobs === 0) {
            log.info("The database is back; consuming again");
            await this.#broker.setPaused("database", false).catch(() => {});
          }
        }
        return result;
      } catch (error) {
        this.#metrics.aggregationErrors.inc({ error_type: "database" });
        if (!(error instanceof RetryError)) {
          log.error("Unexpected error committing a batch: {error}", { error });
        }
        if (!failing) {
          failing = true;
          this.#failingJobs += 1;
          log.error(
            "Cannot commit a batch of {count} votes ({error}); consumption paused, nothing acknowledged, retrying",
            { count: votes.length, error: (error as Error).message },
          );
          this.#broker.setPaused("database", true).catch(() => {});
        }
        const backoffMs = Math.min(MAX_BACKOFF_MS, this.#retryDelayMs * 2 ** attempt);
        await delay(backoffMs * (0.75 + Math.random() / 2));
      }
    }
  }

  #record(job: Job, result: CommitResult): void {
    const m = this.#metrics;
    const seconds = (performance.now() - job.closedAt) / 1000;
    for (const law of result.laws) {
      if (law.ouiAdded) m.votesAggregated.inc({ law_id: law.lawId, choice: "oui" }, law.ouiAdded);
      if (law.nonAdded) m.votesAggregated.inc({ law_id: law.lawId, choice: "non" }, law.nonAdded);
      m.currentVoteTotals.set({ law_id: law.lawId, choice: "oui" }, law.ouiCount);
      m.currentVoteTotals.set({ law_id: law.lawId, choice: "non" }, law.nonCount);
    }
    m.batchProcessingDuration.set(seconds);
    m.batchCommitSeconds.observe(seconds);
    m.batchSizeProcessed.inc(job.entries.length);
    m.batchSize.observe(job.entries.length);
    if (result.duplicates) m.duplicateAttempts.inc(result.duplicates);
    if (result.redelivered) m.redeliveredNoops.inc(result.redelivered);

    const t = this.totals;
    t.batches += 1;
    t.messages += job.entries.length;
    t.counted += result.counted;
    t.duplicates += result.duplicates;
    t.redelivered += result.redelivered;
    this.#lastCommitAt = new Date();

    const now = performance.now();
    if (now - this.#lastLogAt >= 1000) {
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

  /** Acknowledges committed batches from the oldest on, stopping at the first not yet committed. */
  #acknowledgeInOrder(): void {
    while (this.#jobs.length > 0 && this.#jobs[0].committed) {
      const job = this.#jobs.shift()!;
      if (job.ackable) {
        const lastTagBySession = new Map<number, number>();
        for (const { delivery } of job.entries) {
          lastTagBySession.set(delivery.session, Math.max(delivery.tag, lastTagBySession.get(delivery.session) ?? 0));
        }
        for (const [session, tag] of lastTagBySession) this.#broker.ack(session, tag);
      }
      job.acked.resolve();
    }
    this.refreshGauges();
    this.dispatchEvent(new Event("acked"));
  }
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
