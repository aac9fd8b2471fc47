/**
 * Dead-lettering in the pipeline: sending a rejected message's copy, counting
 * it, and deciding after a commit whether its batch may be acknowledged.
 *
 * A message is acknowledged only once its dead-letter copy is confirmed
 * stored. When a copy fails, the batch is not acknowledged; and since a
 * `multiple` ack of a later batch would settle the message anyway, the broker
 * connection is dropped (if it is still the message's) so that every
 * unacknowledged message comes back.
 *
 * It does not build or publish the copy (`../broker/dead_letter.ts`).
 *
 * @module
 */

import type { Delivery } from "../broker/delivery.ts";
import { getLogger } from "../log.ts";
import type { Rejection } from "../vote.ts";
import type { CommitResult } from "../database/writer.ts";
import type { Batch, Message } from "./message.ts";
import type { Telemetry } from "./telemetry.ts";

const log = getLogger("aggregator");

/** What dead-lettering needs of the broker. */
export interface DeadLetterBroker {
  /** Number of the current connection. */
  readonly session: number;
  deadLetter(delivery: Delivery, rejection: Rejection): Promise<void>;
  reconnect(): Promise<void>;
}

/** Sends dead-letter copies and settles batches that hold rejected messages; see the module documentation. */
export class DeadLetters {
  readonly #broker: DeadLetterBroker;
  readonly #telemetry: Telemetry;

  constructor(broker: DeadLetterBroker, telemetry: Telemetry) {
    this.#broker = broker;
    this.#telemetry = telemetry;
  }

  /**
   * Sends the copy of `message`; resolves with whether the broker confirmed it stored. Never rejects.
   * Bound, so that it is passed as it is (no closure per delivery).
   */
  readonly send = (message: Message, rejection: Rejection): Promise<boolean> => {
    this.#telemetry.rejected(rejection.reason);
    return this.#broker.deadLetter(message.delivery, rejection).then(
      () => {
        this.#telemetry.deadLettered(rejection.reason);
        return true;
      },
      (error: Error) => {
        this.#telemetry.error("dead_letter");
        log.warn("Dead-letter publish failed ({error}); the message will be redelivered", { error: error.message });
        return false;
      },
    );
  };

  /**
   * After `batch` committed: dead-letters the votes the database refused, waits
   * for every copy of the batch, and marks the batch not `ackable` if one failed.
   */
  async settle(batch: Batch, result: CommitResult): Promise<void> {
    const voteMessages = batch.messages.filter((m) => m.vote);
    for (const { index, detail } of result.rejected) {
      const message = voteMessages[index];
      message.rejection = { reason: "database_rejected", detail };
      message.deadLettered = this.send(message, message.rejection);
      log.warn("The database refused vote {hash}: {detail}; dead-lettered", { hash: message.vote?.hash, detail });
    }
    const rejected = batch.messages.filter((m) => m.deadLettered);
    const confirmed = await Promise.all(rejected.map((m) => m.deadLettered));
    if (!confirmed.includes(false)) return;
    batch.ackable = false;
    if (rejected.some((m, i) => !confirmed[i] && m.delivery.session === this.#broker.session)) {
      await this.#broker.reconnect();
    }
  }
}
