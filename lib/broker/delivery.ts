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
  /**
   * The message's properties, as amqplib decoded them (not copied: most messages never need them);
   * a dead-letter copy keeps the {@link tracedProperties} of them.
   */
  properties: TracedProperties;
}

/** Message properties carried over to a dead-letter copy (not `expiration`: the copy must not expire). */
export interface TracedProperties {
  contentEncoding?: string;
  messageId?: string;
  correlationId?: string;
  timestamp?: number;
  appId?: string;
  type?: string;
  replyTo?: string;
  priority?: number;
}

const TRACED = [
  "contentEncoding",
  "messageId",
  "correlationId",
  "timestamp",
  "appId",
  "type",
  "replyTo",
  "priority",
] as const;

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
    properties: message.properties,
  };
}

/** The properties of `properties` that a dead-letter copy keeps, so that it can be traced and replayed. */
export function tracedProperties(properties: TracedProperties): TracedProperties {
  const all = properties as Record<string, unknown>;
  const kept: Record<string, unknown> = {};
  for (const name of TRACED) {
    if (all[name] !== undefined && all[name] !== null) kept[name] = all[name];
  }
  return kept as TracedProperties;
}
