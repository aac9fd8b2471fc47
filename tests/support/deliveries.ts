/**
 * Deliveries for the pipeline's unit tests: {@link Delivery} objects as the
 * broker session makes them (`toDelivery` in lib/broker/delivery.ts), built in
 * memory, so that a test can feed the aggregator or the scheduler without a
 * broker.
 *
 * @example
 * ```ts
 * import { fakeDelivery } from "./deliveries.ts";
 * aggregator.receive(fakeDelivery('{"vote_hash": "…"}', { tag: 1 }));
 * ```
 *
 * @module
 */

import type { Delivery } from "../../lib/broker/delivery.ts";

/** The limit (`MAX_MESSAGE_BYTES`) fake deliveries are received under. */
export const FAKE_MAX_BYTES = 16 * 1024;

/**
 * A delivery of `body` (a string is UTF-8 encoded), whole, received now as tag 1 on session 1, not
 * redelivered, with no headers, content type or properties; `fields` override any of them.
 */
export function fakeDelivery(body: string | Uint8Array = "", fields: Partial<Delivery> = {}): Delivery {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  return {
    body: bytes,
    size: bytes.byteLength,
    maxBytes: FAKE_MAX_BYTES,
    tag: 1,
    session: 1,
    receivedAt: performance.now(),
    redelivered: false,
    headers: undefined,
    contentType: undefined,
    properties: {},
    ...fields,
  };
}
