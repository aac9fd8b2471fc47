/**
 * One dead letter as the tools see it: why it is there (the service's
 * `x-reject-reason`, or the broker's own `x-death` reason: `rejected`,
 * `expired`, `maxlen`, `delivery_limit`), which law it names, when it was
 * dead-lettered, which message it is a copy of, and its body bounded and escaped for a terminal. It reads a
 * message; it does not fetch or settle one ({@link ./browse.ts}).
 *
 * @module
 */

import type { GetMessage } from "amqplib";
import {
  DEAD_LETTER_ID_HEADER,
  ORIGINAL_DIGEST_HEADER,
  ORIGINAL_QUEUE_HEADER,
  REJECT_DETAIL_HEADER,
  REJECT_REASON_HEADER,
  REJECT_TIME_HEADER,
} from "../broker/dead_letter.ts";

/** A dead letter, read. */
export interface DeadLetter {
  /** Position in the DLQ when read (0 = oldest). */
  position: number;
  /** The service's reason, or the broker's (`expired`, `maxlen`, `delivery_limit`, `rejected`), or `unknown`. */
  reason: string;
  /** Who dead-lettered it. */
  source: "service" | "broker" | "unknown";
  detail: string | null;
  /** The body's `law_id` when it is a JSON object with one, else null. */
  lawId: string | null;
  /** When it was dead-lettered (ISO 8601), when the headers say. */
  deadLetteredAt: string | null;
  /** The queue it came from, when the headers say. */
  originalQueue: string | null;
  /**
   * The same for every copy of one message (`x-original-digest`); null on a letter without it (the
   * broker's own), which is then a message of its own.
   */
  digest: string | null;
  bodyBytes: number;
}

/** Bodies larger than this are not parsed for a law id. */
const MAX_PARSED_BODY = 64 * 1024;

/** Reads `message` (at `position` in the DLQ). */
export function readDeadLetter(message: GetMessage, position: number): DeadLetter {
  const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
  const death = firstDeath(headers);
  const own = typeof headers[REJECT_REASON_HEADER] === "string" ? headers[REJECT_REASON_HEADER] as string : null;
  const brokerReason = typeof headers["x-first-death-reason"] === "string"
    ? headers["x-first-death-reason"] as string
    : typeof death?.reason === "string"
    ? death.reason
    : null;
  return {
    position,
    reason: own ?? brokerReason ?? "unknown",
    source: own ? "service" : brokerReason ? "broker" : "unknown",
    detail: typeof headers[REJECT_DETAIL_HEADER] === "string" ? headers[REJECT_DETAIL_HEADER] as string : null,
    lawId: lawOf(message.content),
    deadLetteredAt: typeof headers[REJECT_TIME_HEADER] === "string"
      ? headers[REJECT_TIME_HEADER] as string
      : timestamp(death?.time) ?? timestamp(message.properties.timestamp),
    originalQueue: typeof headers[ORIGINAL_QUEUE_HEADER] === "string"
      ? headers[ORIGINAL_QUEUE_HEADER] as string
      : typeof death?.queue === "string"
      ? death.queue
      : null,
    digest: typeof headers[ORIGINAL_DIGEST_HEADER] === "string" ? headers[ORIGINAL_DIGEST_HEADER] as string : null,
    bodyBytes: message.content.byteLength,
  };
}

/** The headers a replayed copy drops: the dead-lettering's own, so the service sees the vote as it was sent. */
export function replayHeaders(headers: Record<string, unknown> | undefined, dlq: string): Record<string, unknown> {
  const kept: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (/^x-(death|first-death-|last-death-)/.test(name)) continue;
    if (
      [
        REJECT_REASON_HEADER,
        REJECT_DETAIL_HEADER,
        REJECT_TIME_HEADER,
        ORIGINAL_QUEUE_HEADER,
        ORIGINAL_DIGEST_HEADER,
        DEAD_LETTER_ID_HEADER,
      ].includes(name)
    ) continue;
    kept[name] = value;
  }
  kept["x-replayed-from"] = dlq;
  return kept;
}

/**
 * The body as one line of at most `maxChars` characters: invalid UTF-8 as U+FFFD, every control, C1,
 * bidirectional and line-separator character escaped (`\n`, `\u001b`, …), a note of what was cut.
 */
export function boundedBody(body: Uint8Array, maxChars: number): string {
  const text = new TextDecoder("utf-8", { fatal: false }).decode(body.subarray(0, maxChars * 4));
  const chars = [...text];
  const shown = chars.slice(0, maxChars).join("");
  const escaped = JSON.stringify(shown).slice(1, -1).replace(
    /[\u007f-\u009f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  const cut = chars.length > maxChars || body.byteLength > maxChars * 4;
  return cut ? `${escaped}… (${body.byteLength} bytes)` : escaped;
}

function firstDeath(headers: Record<string, unknown>): Record<string, unknown> | undefined {
  const deaths = headers["x-death"];
  if (!Array.isArray(deaths) || deaths.length === 0) return undefined;
  // Newest first: the last entry is the first death.
  const entry = deaths[deaths.length - 1];
  return entry !== null && typeof entry === "object" ? entry as Record<string, unknown> : undefined;
}

function timestamp(value: unknown): string | null {
  const seconds = typeof value === "number"
    ? value
    : value !== null && typeof value === "object" && typeof (value as { value?: unknown }).value === "number"
    ? (value as { value: number }).value
    : undefined;
  return seconds === undefined ? null : new Date(seconds * 1000).toISOString();
}

function lawOf(body: Uint8Array): string | null {
  if (body.byteLength > MAX_PARSED_BODY) return null;
  try {
    const parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
    const law = parsed?.law_id;
    return typeof law === "string" ? law : null;
  } catch {
    return null;
  }
}
