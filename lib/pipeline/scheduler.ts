/**
 * Scheduling: when a batch closes, and when it is committed.
 *
 * - Group commit: a batch closes as soon as no more deliveries are arriving
 *   (checked one macrotask after the first delivery of a burst) and a
 *   committing slot is free, once it is as old as the last commit took; while
 *   every slot is busy it keeps gathering, and when a commit ends what
 *   gathered meanwhile closes. At a low rate a vote waits about one commit;
 *   under load batches fill up.
 * - A batch also closes at `batchSize` messages or `batchTimeoutMs` after its
 *   first message (`batcher.ts`), the upper bound, or when asked (`/flush`,
 *   pause, drain).
 * - Closed batches commit up to `maxInflightBatches` at a time, oldest first.
 *   First copy wins: a batch sharing a vote hash with one still committing
 *   waits, or the later copy could commit first.
 *
 * It does not own what a commit does (`outage.ts`, `../database/writer.ts`) nor the
 * acknowledgements (`acker.ts`).
 *
 * @module
 */

import { Batcher } from "./batcher.ts";
import { type Batch, closeBatch, type Message } from "./message.ts";

/** Options of {@link Scheduler}. */
export interface SchedulerOptions<R> {
  /** Messages that close a batch. */
  batchSize: number;
  /** Milliseconds after its first message that a batch closes at the latest. */
  batchTimeoutMs: number;
  /** Closed batches committing at once. @default 1 */
  maxInflightBatches?: number;
  /** Told of each batch as it closes, in delivery order. */
  onClose: (batch: Batch) => void;
  /** Commits a batch; its slot is free again once this settles. */
  commit: (batch: Batch) => Promise<R>;
  /** Told of each commit's outcome, after its slot is freed. */
  onCommitted: (batch: Batch, result: R) => Promise<void>;
  /** Told when committing or handling a batch threw. */
  onError: (error: unknown) => void;
}

/** The open batch and the committing slots; see the module documentation. */
export class Scheduler<R> {
  readonly #options: SchedulerOptions<R>;
  readonly #batcher: Batcher<Message>;
  readonly #maxInflight: number;
  /** Closed batches not yet handed to `commit`. */
  readonly #waiting: Batch[] = [];
  /** Vote hashes in committing batches, with how many of those hold each. */
  readonly #committingHashes = new Map<string, number>();
  #committing = 0;
  /** The pending check that closes the open batch once the current burst of deliveries is over. */
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** Milliseconds the last commit took: the youngest a batch commits at, once deliveries pause. */
  #lastCommitMs = 0;

  constructor(options: SchedulerOptions<R>) {
    this.#options = options;
    this.#maxInflight = options.maxInflightBatches ?? 1;
    this.#batcher = new Batcher<Message>({
      size: options.batchSize,
      timeoutMs: options.batchTimeoutMs,
      onBatch: (messages) => this.#closed(messages),
    });
  }

  /** Messages in the open batch. */
  get openMessages(): number {
    return this.#batcher.length;
  }

  /** `performance.now()` when the open batch got its first message; 0 when empty. */
  get openedAt(): number {
    return this.#batcher.openedAt;
  }

  /** Batches committing now. */
  get committing(): number {
    return this.#committing;
  }

  /** Adds a message to the open batch. */
  add(message: Message): void {
    this.#batcher.add(message);
    // One timer a burst, not one a message: deliveries that arrive together are handled in one task.
    if (this.#idleTimer === undefined && this.#batcher.length > 0) this.#armIdleCheck();
  }

  /**
   * Closes the open batch now.
   *
   * @returns how many messages it held
   */
  close(): number {
    return this.#batcher.close();
  }

  #armIdleCheck(delayMs = 0): void {
    this.#idleTimer = setTimeout(this.#onIdle, delayMs);
  }

  /** One macrotask after the first delivery of a burst: the burst is over. */
  readonly #onIdle = (): void => {
    this.#idleTimer = undefined;
    this.#closeIfSlotFree();
  };

  /**
   * Group commit: the open batch commits now if nothing is ahead of it and it is at least as old as the
   * last commit took; a younger one waits for the rest of that time. At a steady rate a batch is that
   * old anyway (it gathered during the commit before); when deliveries come in bursts with gaps (a
   * backlog read by a busy broker) it gathers what one commit costs, instead of committing each burst.
   * A lone vote waits for one short commit's duration at most.
   */
  #closeIfSlotFree(): void {
    if (this.#waiting.length > 0 || this.#committing >= this.#maxInflight || this.#batcher.length === 0) return;
    const wait = this.#lastCommitMs - (performance.now() - this.#batcher.openedAt);
    if (wait > 0) this.#armIdleCheck(wait);
    else this.#batcher.close();
  }

  #closed(messages: Message[]): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    const batch = closeBatch(messages, this.#maxInflight > 1);
    this.#options.onClose(batch);
    this.#waiting.push(batch);
    this.#pump();
  }

  #pump(): void {
    while (this.#committing < this.#maxInflight && this.#waiting.length > 0) {
      const batch = this.#waiting[0];
      // Across instances the commit order decides, as it must; within one, the first copy received wins.
      if (this.#committing > 0 && batch.hashes.some((h) => this.#committingHashes.has(h))) return;
      this.#waiting.shift();
      this.#committing += 1;
      for (const h of batch.hashes) this.#committingHashes.set(h, (this.#committingHashes.get(h) ?? 0) + 1);
      this.#run(batch).catch(this.#options.onError);
    }
  }

  async #run(batch: Batch): Promise<void> {
    let result: R;
    const started = performance.now();
    try {
      result = await this.#options.commit(batch);
    } finally {
      this.#lastCommitMs = performance.now() - started;
      this.#release(batch);
    }
    await this.#options.onCommitted(batch, result);
  }

  /** Frees the committing slot and the batch's hashes, and starts what waited on them. */
  #release(batch: Batch): void {
    for (const h of batch.hashes) {
      const n = this.#committingHashes.get(h)! - 1;
      if (n === 0) this.#committingHashes.delete(h);
      else this.#committingHashes.set(h, n);
    }
    this.#committing -= 1;
    this.#pump();
    // What gathered while every slot was busy commits now (see #closeIfSlotFree), unless a burst is being
    // delivered: then the pending idle check decides once it is over.
    if (this.#idleTimer === undefined) this.#closeIfSlotFree();
  }
}
