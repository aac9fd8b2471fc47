/**
 * Acknowledging: batches are acknowledged strictly in delivery order, each with
 * one `multiple` acknowledgement per session it holds messages of, and only
 * once it and every batch before it are committed.
 *
 * Batches may commit out of order (`MAX_INFLIGHT_BATCHES` > 1); a `multiple`
 * ack settles everything up to its tag, so acknowledging a later batch first
 * would also settle an earlier one that is not committed.
 *
 * It does not own committing (`scheduler.ts`) nor the channel (`../broker/`).
 *
 * @module
 */

import type { Batch } from "./message.ts";

/** What the acker needs of the broker. */
export interface Acknowledger {
  /** Acknowledges every message of `session` up to `tag`; dropped when the session is gone. */
  ack(session: number, tag: number): boolean;
}

/** The batches closed and not yet acknowledged, oldest first; see the module documentation. */
export class Acker {
  readonly #broker: Acknowledger;
  readonly #batches: Batch[] = [];

  constructor(broker: Acknowledger) {
    this.#broker = broker;
  }

  /** Batches closed and not yet acknowledged. */
  get length(): number {
    return this.#batches.length;
  }

  /** `performance.now()` at receipt of the oldest message not yet acknowledged, if any. */
  get oldestReceivedAt(): number | undefined {
    return this.#batches[0]?.messages[0]?.delivery.receivedAt;
  }

  /** Resolves once the newest batch tracked (and so every one) is acknowledged, or settled unacknowledged. */
  async settled(): Promise<void> {
    await this.#batches.at(-1)?.acked.promise;
  }

  /** Takes a batch at its close, in delivery order. */
  track(batch: Batch): void {
    this.#batches.push(batch);
  }

  /**
   * Acknowledges committed batches from the oldest on, stopping at the first
   * not yet committed. A batch that is not `ackable` is settled without an ack:
   * its messages come back.
   *
   * @returns the batches settled, oldest first
   */
  acknowledgeCommitted(): Batch[] {
    const settled: Batch[] = [];
    while (this.#batches.length > 0 && this.#batches[0].committed) {
      const batch = this.#batches.shift()!;
      if (batch.ackable) {
        const lastTagBySession = new Map<number, number>();
        for (const { delivery } of batch.messages) {
          lastTagBySession.set(delivery.session, Math.max(delivery.tag, lastTagBySession.get(delivery.session) ?? 0));
        }
        for (const [session, tag] of lastTagBySession) this.#broker.ack(session, tag);
      }
      batch.acked.resolve();
      settled.push(batch);
    }
    return settled;
  }
}
