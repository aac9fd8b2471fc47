/**
 * Deliveries: what the service keeps of a message from the vote queue until it
 * is acknowledged — bounded in bytes, whatever arrives: a body over the limit
 * (`MAX_MESSAGE_BYTES`) is judged by its size and only its first bytes are
 * kept (for the dead-letter copy); headers are kept only up to what a
 * dead-letter copy carries (`copied_headers.ts`); amqplib itself is kept from
 * assembling more than that of a body (`content_limit.ts`); a body is copied out of
 * amqplib's buffers, so that a small one does not pin a large read buffer.
 *
 * @module
 */

import type { ConsumeMessage } from "amqplib";
import { RECEIVED_SIZE } from "./content_limit.ts";
import { copiedHeaders } from "./copied_headers.ts";

/** One message received, not yet acknowledged. */
export interface Delivery {
  /** The body, or only its first `maxBytes` bytes when it is larger (then `size` > `body.byteLength`). */
  body: Uint8Array;
  /** The body's size as received, in bytes. */
  size: number;
  /** The limit it was received under (`MAX_MESSAGE_BYTES`): a larger body is refused as `oversized`. */
  maxBytes: number;
  /** Delivery tag on its session's channel. */
  tag: number;
  /** Which connection it came on: tags of another session cannot be acknowledged. */
  session: number;
  /** `performance.now()` at receipt. */
  receivedAt: number;
  redelivered: boolean;
  /** The headers, or — over what a dead-letter copy carries — the one header saying they were dropped. */
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

/** The delivery of `message`, received now on `session`, keeping at most `maxBytes` of its body. */
export function toDelivery(message: ConsumeMessage, session: number, maxBytes: number): Delivery {
  const { content } = message;
  const headers = message.properties.headers;
  return {
    body: owned(content.byteLength > maxBytes ? content.subarray(0, maxBytes) : content),
    size: Math.max(
      content.byteLength,
      Number((message.properties as { [RECEIVED_SIZE]?: number })[RECEIVED_SIZE] ?? 0),
    ),
    maxBytes,
    tag: message.fields.deliveryTag,
    session,
    receivedAt: performance.now(),
    redelivered: message.fields.redelivered,
    headers: headers === undefined ? undefined : copiedHeaders(headers),
    contentType: message.properties.contentType,
    properties: traced(message.properties),
  };
}

/** Size of the buffers small bodies are copied into, one after the other. */
const SLAB_BYTES = 64 * 1024;
let slab = new Uint8Array(0);
let slabUsed = 0;

/**
 * `bytes` copied out of the buffer it is cut from, which a view would keep alive whole (a socket read, or a
 * concatenation of frames). Small bodies are copied one after the other into shared 64 KiB buffers: bodies
 * are acknowledged in delivery order, so a buffer is freed soon after its last body, and a copy costs no
 * allocation of its own.
 */
function owned(bytes: Uint8Array): Uint8Array {
  if (bytes.byteLength > SLAB_BYTES / 4) return new Uint8Array(bytes);
  if (slabUsed + bytes.byteLength > slab.byteLength) {
    slab = new Uint8Array(SLAB_BYTES);
    slabUsed = 0;
  }
  const copy = slab.subarray(slabUsed, slabUsed + bytes.byteLength);
  copy.set(bytes);
  slabUsed += bytes.byteLength;
  return copy;
}

function traced(properties: ConsumeMessage["properties"]): TracedProperties {
  const kept: Record<string, unknown> = {};
  for (const name of TRACED) {
    if (properties[name] !== undefined && properties[name] !== null) kept[name] = properties[name];
  }
  return kept as TracedProperties;
}
