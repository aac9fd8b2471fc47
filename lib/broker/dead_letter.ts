/**
 * Dead-letter copies: what a rejected message becomes in `<queue>.dlq`, and
 * publishing it so that it is known to be stored before the original is
 * acknowledged.
 *
 * A copy keeps the body and the headers of the original and adds the reason
 * (`x-reject-reason`, `x-reject-detail`) and `x-original-queue`. It is
 * published persistent and `mandatory` on a confirm channel: a copy the broker
 * cannot route (the DLQ or its binding is gone) comes back as a return before
 * its confirm, and the publish then fails instead of vanishing.
 *
 * It does not decide what is rejected (`../vote.ts`, `../pipeline/`), nor own the
 * channel (`session.ts`).
 *
 * @example
 * ```ts
 * import { DeadLetterPublisher } from "./dead_letter.ts";
 * const publisher = new DeadLetterPublisher("votes.aggregation");
 * publisher.watch(channel); // once per channel, before publishing on it
 * await publisher.publish(channel, delivery, { reason: "invalid_json", detail: "…" });
 * ```
 *
 * @module
 */

import type { ConfirmChannel, ConsumeMessage } from "amqplib";
import { Buffer } from "node:buffer";
import type { Rejection } from "../vote.ts";
import type { Delivery } from "./delivery.ts";
import { deadLetterNames } from "./topology.ts";

/** Header names a dead-lettered message carries. */
export const REJECT_REASON_HEADER = "x-reject-reason";
export const REJECT_DETAIL_HEADER = "x-reject-detail";
/** Tells a returned (unroutable) copy apart from the others. */
const DEAD_LETTER_ID_HEADER = "x-dead-letter-id";
/** Longest `x-reject-detail`, in characters. */
const MAX_DETAIL_CHARS = 500;

/** Publishes dead-letter copies for one vote queue; see the module documentation. */
export class DeadLetterPublisher {
  readonly #queue: string;
  /** Ids of copies the broker returned as unroutable, until their confirm arrives. */
  readonly #returned = new Set<string>();

  constructor(queue: string) {
    this.#queue = queue;
  }

  /** Listens for returned copies on `channel`; call once per channel. */
  watch(channel: ConfirmChannel): void {
    // A return comes before the confirm of the same publish: publish's callback then sees it.
    channel.on("return", (message: ConsumeMessage) => {
      const id = message.properties.headers?.[DEAD_LETTER_ID_HEADER];
      if (typeof id === "string") this.#returned.add(id);
    });
  }

  /** Publishes the copy of `delivery` and resolves once the broker confirmed it stored. */
  publish(channel: ConfirmChannel, delivery: Delivery, rejection: Rejection): Promise<void> {
    const names = deadLetterNames(this.#queue);
    const id = crypto.randomUUID();
    return new Promise((resolve, reject) => {
      channel.publish(
        names.exchange,
        names.queue,
        Buffer.from(delivery.body.buffer, delivery.body.byteOffset, delivery.body.byteLength),
        {
          persistent: true,
          // Routed nowhere (the DLQ was deleted), the broker returns it before confirming, instead of dropping it.
          mandatory: true,
          contentType: delivery.contentType,
          headers: {
            ...delivery.headers,
            [REJECT_REASON_HEADER]: rejection.reason,
            [REJECT_DETAIL_HEADER]: rejection.detail.slice(0, MAX_DETAIL_CHARS),
            "x-original-queue": this.#queue,
            [DEAD_LETTER_ID_HEADER]: id,
          },
        },
        (error: unknown) => {
          const returned = this.#returned.delete(id);
          if (error) reject(error);
          else if (returned) {
            reject(new Error(`the broker returned the dead-letter publish: is ${names.queue} missing?`));
          } else resolve();
        },
      );
    });
  }
}
