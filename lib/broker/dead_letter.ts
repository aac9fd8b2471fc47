/**
 * Dead-letter copies: what a rejected message becomes in `<queue>.dlq`, and
 * publishing it so that it is known to be stored before the original is
 * acknowledged.
 *
 * A copy keeps the body and the headers of the original and adds the reason
 * (`x-reject-reason`, `x-reject-detail`), the time (`x-reject-time`), `x-original-queue` and
 * `x-original-digest`, which is the same for every copy of one message: dead-lettering is at least once
 * (a copy confirmed, then the connection lost before the original's acknowledgement, and the redelivered
 * original dead-lettered again), so the dead-letter tools count and replay a message once by it. Of a body over
 * `MAX_MESSAGE_BYTES` only the first bytes are kept (`x-reject-body-truncated`
 * says its size), of headers over 16 KiB none (`x-reject-headers-dropped`). It is
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
import { createHash } from "node:crypto";
import type { Rejection } from "../vote.ts";
import { copiedHeaders, HEADERS_DROPPED_HEADER } from "./copied_headers.ts";
import type { Delivery } from "./delivery.ts";
import { deadLetterNames } from "./topology.ts";

/** Header names a dead-lettered message carries. */
export const REJECT_REASON_HEADER = "x-reject-reason";
export const REJECT_DETAIL_HEADER = "x-reject-detail";
/** When the copy was made (ISO 8601), for the dead-letter tools' oldest and newest. */
export const REJECT_TIME_HEADER = "x-reject-time";
/** The vote queue the original came from. */
export const ORIGINAL_QUEUE_HEADER = "x-original-queue";
/** {@link originalDigest}: the same for every copy of one message. */
export const ORIGINAL_DIGEST_HEADER = "x-original-digest";
/** Tells a returned (unroutable) copy apart from the others. */
export const DEAD_LETTER_ID_HEADER = "x-dead-letter-id";
/** Says that the original's body was over the limit and is cut in the copy: its size and what is kept. */
export const BODY_TRUNCATED_HEADER = "x-reject-body-truncated";
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
          ...delivery.properties,
          persistent: true,
          // Routed nowhere (the DLQ was deleted), the broker returns it before confirming, instead of dropping it.
          mandatory: true,
          contentType: delivery.contentType,
          headers: {
            ...copiedHeaders(delivery.headers),
            [REJECT_REASON_HEADER]: rejection.reason,
            [REJECT_DETAIL_HEADER]: [...rejection.detail].slice(0, MAX_DETAIL_CHARS).join(""),
            [REJECT_TIME_HEADER]: new Date().toISOString(),
            ...(delivery.size > delivery.body.byteLength
              ? { [BODY_TRUNCATED_HEADER]: `${delivery.size} bytes; the first ${delivery.body.byteLength} kept` }
              : {}),
            [ORIGINAL_QUEUE_HEADER]: this.#queue,
            [ORIGINAL_DIGEST_HEADER]: originalDigest(delivery),
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

/** Headers the broker sets or changes when it delivers a message again (a quorum queue counts deliveries). */
const REDELIVERY_HEADERS = new Set(["x-delivery-count", "x-acquired-count"]);

/**
 * The same for every delivery of one message, whatever the broker redelivered: a SHA-256 (hex) of its
 * body (the part kept, and its size), content type, the properties a copy keeps (`message-id` among them)
 * and its headers, less those a redelivery changes. Not `message-id` alone: a publisher that gave two
 * different messages one id would make them one, and a replay would then drop one. Two deliveries with the
 * same digest are the same bytes, sent once or sent again alike: replaying either is replaying both.
 */
export function originalDigest(
  delivery: Pick<Delivery, "body" | "size" | "contentType" | "properties" | "headers">,
): string {
  const headers = delivery.headers ?? {};
  const described = {
    size: delivery.size,
    contentType: delivery.contentType ?? null,
    properties: canonical(delivery.properties),
    // Headers too large to copy: their size counts the delivery count too, so only the fact is kept.
    headers: HEADERS_DROPPED_HEADER in headers
      ? { [HEADERS_DROPPED_HEADER]: true }
      : canonical(Object.fromEntries(Object.entries(headers).filter(([name]) => !REDELIVERY_HEADERS.has(name)))),
  };
  // JSON escapes its line breaks: the one after it cannot be part of it, so the body's bytes start there.
  return createHash("sha256").update(JSON.stringify(described)).update("\n").update(delivery.body).digest("hex");
}

/** `value` with every object's keys in order and bytes as base64, for a JSON that is the same for equal values. */
function canonical(value: unknown): unknown {
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString("base64") };
  if (typeof value === "bigint") return { bigint: String(value) };
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value).sort().map((key) => [key, canonical((value as Record<string, unknown>)[key])]),
    );
  }
  return value;
}
