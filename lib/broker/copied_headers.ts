/**
 * What a message keeps of its headers from the moment it is received: the
 * headers themselves up to {@link MAX_COPIED_HEADER_BYTES}, or else one header
 * saying how large they were. A delivery holds no more than that
 * (`delivery.ts`), and a dead-letter copy carries it (`dead_letter.ts`).
 *
 * @module
 */

/** Says that the original's headers were too large to copy, and how large they were. */
export const HEADERS_DROPPED_HEADER = "x-reject-headers-dropped";

/**
 * Largest encoded size of the original's headers that a copy carries. amqplib encodes a message's
 * properties into one 64 KiB buffer: a copy over it fails to publish and closes the channel, so the
 * message would come back and fail again for ever. Larger headers are dropped, and the copy says so.
 */
export const MAX_COPIED_HEADER_BYTES = 16 * 1024;

/** The original's headers, or — when they would not fit in a copy — a header saying how large they were. */
export function copiedHeaders(headers: Record<string, unknown> | undefined): Record<string, unknown> {
  if (headers === undefined) return {};
  const size = encodedSize(headers);
  if (size <= MAX_COPIED_HEADER_BYTES) return headers;
  return { [HEADERS_DROPPED_HEADER]: `${size} bytes of headers dropped (limit ${MAX_COPIED_HEADER_BYTES})` };
}

/** An upper bound of the AMQP field-table size of `value` (UTF-8 strings, 8 bytes a number, framing). */
function encodedSize(value: unknown): number {
  if (typeof value === "string") return 5 + new TextEncoder().encode(value).byteLength;
  if (value instanceof Uint8Array) return 5 + value.byteLength;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + encodedSize(v), 5);
  if (value !== null && typeof value === "object") {
    return Object.entries(value).reduce(
      (n, [k, v]) => n + 2 + new TextEncoder().encode(k).byteLength + encodedSize(v),
      5,
    );
  }
  return 9;
}
