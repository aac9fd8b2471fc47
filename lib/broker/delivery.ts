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
  /** The properties a dead-letter copy keeps, so that it can be traced and replayed. */
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
    properties: traced(message.properties),
  };
}

function traced(properties: ConsumeMessage["properties"]): TracedProperties {
  const kept: Record<string, unknown> = {};
  for (const name of TRACED) {
    if (properties[name] !== undefined && properties[name] !== null) kept[name] = properties[name];
  }
  return kept as TracedProperties;
}
