/**
 * The soak's publisher: `deno task publish`'s generator and publishing loop at
 * a steady rate, in chunks, each confirmed by the broker before the next. What
 * is confirmed is recorded as a prefix of the generated messages; a chunk whose
 * confirms were lost (the broker went away) is published again on a new
 * connection — byte-identical copies are one vote to the service, and a
 * malformed one may then be dead-lettered twice — so that every message of the
 * prefix is in the queue at least once.
 *
 * @module
 */

import amqp from "amqplib";
import { type GeneratedVotes, generateVotes, publishVotes } from "../publish.ts";
import { RABBITMQ_URL } from "../../tests/support/servers.ts";
import { delay } from "../../tests/support/wait.ts";

/** Messages per chunk (one publish call, then its confirms). */
const CHUNK = 200;

/** Options of {@link SoakPublisher}. */
export interface PublisherOptions {
  queue: string;
  seed: number;
  /** Messages per second. */
  rate: number;
  /** Longest it may run, in seconds: the generator makes this many seconds' worth. */
  maxSeconds: number;
  /** Fraction of duplicate attempts. @default 0.03 */
  duplicateFraction?: number;
  /** Fraction of malformed messages. @default 0.01 */
  malformedFraction?: number;
}

/** Publishes until stopped; see the module documentation. */
export class SoakPublisher {
  readonly votes: GeneratedVotes;
  /** Messages 0 … confirmed-1 are confirmed by the broker. */
  confirmed = 0;
  /** Chunks published again after a lost connection. */
  republished = 0;
  /** Messages per second achieved, once stopped. */
  rate = 0;
  readonly #options: PublisherOptions;
  #stop = false;
  #running: Promise<void> | undefined;
  #startedAt = 0;

  constructor(options: PublisherOptions) {
    this.#options = options;
    this.votes = generateVotes({
      count: Math.ceil(options.rate * options.maxSeconds),
      laws: 12,
      duplicateFraction: options.duplicateFraction ?? 0.03,
      malformedFraction: options.malformedFraction ?? 0.01,
      seed: options.seed,
      // Duplicates keep their vote's choice (they differ in timestamp): under kills and redeliveries any copy
      // may be the first to commit, and the totals are then the same whichever does.
      minDuplicateDistance: 2 ** 31 - 1,
    });
  }

  /** Starts publishing in the background. */
  start(): void {
    this.#startedAt = performance.now();
    this.#running = this.#run();
  }

  /** Finishes the chunk being published and stops; resolves once all it published is confirmed. */
  async stop(): Promise<void> {
    this.#stop = true;
    await this.#running;
    this.rate = this.confirmed / ((performance.now() - this.#startedAt) / 1000);
  }

  async #run(): Promise<void> {
    const { rate, queue } = this.#options;
    while (!this.#stop && this.confirmed < this.votes.count) {
      let connection;
      try {
        connection = await amqp.connect(RABBITMQ_URL);
      } catch {
        await delay(500); // the broker is restarting: try again
        continue;
      }
      connection.on("error", () => {});
      try {
        const channel = await connection.createConfirmChannel();
        channel.on("error", () => {});
        while (!this.#stop && this.confirmed < this.votes.count) {
          const from = this.confirmed;
          const to = Math.min(from + CHUNK, this.votes.count);
          // Paced from the soak's start, so a stall is caught up (at most one chunk at once).
          const due = this.#startedAt + (from / rate) * 1000;
          if (due > performance.now()) await delay(due - performance.now());
          const bodies = Array.from({ length: to - from }, (_, i) => this.votes.body(from + i));
          await publishVotes(channel, queue, bodies, { rate: rate * 2 });
          this.confirmed = to;
        }
      } catch {
        this.republished += 1; // the chunk goes again on a new connection
      } finally {
        await connection.close().catch(() => {});
      }
    }
  }
}
