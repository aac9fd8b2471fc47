/**
 * Deliveries: what the service keeps of a message from the vote queue until it
 * is acknowledged.
 *
 * @module
 */

import type { ConsumeMessage } from "amqplib";

/** One message received, not yet acknowledged. */
export interface Delivery {
  body: Uint8Array;
  /** Delivery tag on its session's channel. */
  tag: number;
  /** Which connection it came on: tags of another session cannot be acknowledged. */
  session: number;
  /** `performance.now()` at receipt. */
  receivedAt: number;
  redelivered: boolean;
  headers: Record<string, unknown> | undefined;
  contentType: string | undefined;
}

/** The delivery of `message`, received now on `session`. */
export function toDelivery(message: ConsumeMessage, session: number): Delivery {
  return {
    body: message.content,
    tag: message.fields.deliveryTag,
    session,
    receivedAt: performance.now(),
    redelivered: message.fields.redelivered,
    headers: message.properties.headers,
    contentType: message.properties.contentType,
  };
}
