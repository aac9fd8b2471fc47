/**
 * Message parsing: the one place where a message body becomes a {@link Vote}
 * or a {@link Rejection} with a reason.
 *
 * Two shapes exist upstream and both are accepted:
 * - the validation worker's `{voter_hash, law_id, vote, vote_timestamp, status, processed_timestamp}`
 * - the seed publisher's `{vote_hash, citizen_id, law_id, choice, timestamp, metadata}`
 *
 * What the database would refuse is refused here, so that a poison message
 * costs one dead-letter rather than the log2(batch) transactions of isolating
 * it in a batch (PostgreSQL 15, UTF-8 database):
 * - lengths count characters (code points), as `VARCHAR(n)` does: `law_id` 1
 *   to 50, `citizen_id` at most 100; 26 emoji are 26 characters, not 52;
 * - text with a lone surrogate (`"\ud800"`: not UTF-8, postgres.js would
 *   store U+FFFD instead) or a NUL character (`"\u0000"`: PostgreSQL text
 *   cannot hold it) is `invalid_field`;
 * - timestamps: a real calendar date, years 0001 to 9999, hours below 24 and
 *   minutes and seconds below 60, and a zone offset within ±15:59 (PostgreSQL
 *   refuses anything beyond with "time zone displacement out of range");
 * - the choice ignores case and surrounding whitespace (`" Non "` is `non`);
 *   `law_id` and `citizen_id` are kept exactly as sent, whitespace included;
 * - a key given twice: the last one wins (as `JSON.parse`, Python's `json`
 *   upstream and PostgreSQL's `jsonb` read it), so this service counts what
 *   the validation worker validated.
 *
 * @example
 * ```ts
 * import { parseVote } from "./vote.ts";
 * const body = new TextEncoder().encode(JSON.stringify({
 *   vote_hash: "a".repeat(64), law_id: "L1", choice: "OUI", timestamp: "2026-11-22T10:00:00Z",
 * }));
 * const parsed = parseVote(body);
 * if (parsed.ok) console.log(parsed.vote.choice); // "oui"
 * ```
 *
 * @module
 */

/** A vote's choice, lower-cased. */
export type Choice = "oui" | "non";

/** A valid vote, normalized. */
export interface Vote {
  /** SHA-256 of the voter and law, 64 lower-case hex digits: the deduplication key. */
  hash: string;
  /** The seed publisher's citizen id; the validation worker sends none. */
  citizenId: string | null;
  /** 1 to 50 characters (code points, as PostgreSQL counts them). */
  lawId: string;
  choice: Choice;
  /**
   * ISO 8601 text as sent (PostgreSQL parses it exactly), with `Z` added when it has no offset (the
   * validation worker sends Python's zone-less `utcnow().isoformat()`: UTC, whatever the database's
   * TimeZone), or `null` when absent.
   */
  timestamp: string | null;
}

/** Why a message was dead-lettered; also the `reason` label of `dead_lettered_total`. */
export type RejectReason =
  | "oversized"
  | "invalid_json"
  | "not_an_object"
  | "missing_field"
  | "invalid_field"
  | "unknown_choice"
  | "database_rejected";

/** A message that is not a vote: its reason code and a sentence for people. */
export interface Rejection {
  reason: RejectReason;
  detail: string;
}

/** What {@link parseVote} returns. */
export type ParseResult =
  | { ok: true; vote: Vote }
  | { ok: false; rejection: Rejection };

/** Default largest body accepted (`MAX_MESSAGE_BYTES`); a vote is a few hundred bytes. */
export const MAX_BODY_BYTES = 16 * 1024;

const HASH = /^[0-9a-fA-F]{64}$/;
/** The usual form, kept as it is (no copy). */
const LOWER_HASH = /^[0-9a-f]{64}$/;
// Date, optional time with optional fraction and zone: what PostgreSQL's timestamptz input takes unambiguously.
// One match gives every part: year, month, day, hour, minute, second, zone, offset hours and minutes.
const ISO_TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?(Z|[+-](\d{2})(?::?(\d{2}))?)?)?$/;
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Options of {@link parseVote}. */
export interface ParseOptions {
  /** Largest body accepted (`MAX_MESSAGE_BYTES`). @default MAX_BODY_BYTES */
  maxBytes?: number;
  /** The body's size as received, when `body` is only its first bytes. @default body.byteLength */
  size?: number;
}

/**
 * Parses and validates one message body. An oversized one is judged by its size alone, before anything is decoded.
 *
 * @param body the raw message body
 * @returns the vote, or why it is rejected
 */
export function parseVote(body: Uint8Array, options: ParseOptions = {}): ParseResult {
  const { maxBytes = MAX_BODY_BYTES, size = body.byteLength } = options;
  if (size > maxBytes) return reject("oversized", `body is ${size} bytes, the limit is ${maxBytes}`);
  let message: unknown;
  try {
    message = JSON.parse(decoder.decode(body));
  } catch (error) {
    return reject("invalid_json", `body is not UTF-8 JSON: ${(error as Error).message}`);
  }
  if (typeof message !== "object" || message === null || Array.isArray(message)) {
    return reject("not_an_object", `body is JSON ${Array.isArray(message) ? "array" : typeof message}, not an object`);
  }
  const m = message as Record<string, unknown>;

  const hash = pick(m, "vote_hash", "voter_hash");
  if (typeof hash !== "string") return missingOrInvalid(m, hash, "vote_hash (or voter_hash)", "a string");
  const lowerHash = LOWER_HASH.test(hash) ? hash : HASH.test(hash) ? hash.toLowerCase() : undefined;
  if (lowerHash === undefined) return reject("invalid_field", "vote_hash must be 64 hexadecimal digits (SHA-256)");

  const lawId = m.law_id;
  if (typeof lawId !== "string") return missingOrInvalid(m, lawId, "law_id", "a string");
  const lawIdProblem = textProblem(lawId, 1, 50);
  if (lawIdProblem) return reject("invalid_field", `law_id ${lawIdProblem}`);

  const choiceValue = pick(m, "choice", "vote");
  if (typeof choiceValue !== "string") return missingOrInvalid(m, choiceValue, "choice (or vote)", "a string");
  const choice = choiceValue === "oui" || choiceValue === "non" ? choiceValue : choiceValue.trim().toLowerCase();
  if (choice !== "oui" && choice !== "non") {
    return reject("unknown_choice", `choice must be "oui" or "non", got ${JSON.stringify(choiceValue.slice(0, 20))}`);
  }

  const citizenId = m.citizen_id ?? null;
  if (citizenId !== null && typeof citizenId !== "string") {
    return reject("invalid_field", `citizen_id must be a string, got ${typeof citizenId}`);
  }
  const citizenIdProblem = citizenId === null ? undefined : textProblem(citizenId, 0, 100);
  if (citizenIdProblem) return reject("invalid_field", `citizen_id ${citizenIdProblem}`);

  const timestampValue = pick(m, "timestamp", "vote_timestamp") ?? null;
  const timestamp = normalizeTimestamp(timestampValue);
  if (timestamp === undefined) {
    return reject(
      "invalid_field",
      "timestamp must be ISO 8601 text (2026-11-22T10:00:00Z) or Unix seconds",
    );
  }

  return { ok: true, vote: { hash: lowerHash, citizenId, lawId, choice, timestamp } };
}

const CONFLICT = Symbol("conflict");

/** The value under either name; {@link CONFLICT} when both are set and differ. */
function pick(m: Record<string, unknown>, name: string, alias: string): unknown {
  const a = m[name];
  const b = m[alias];
  if (a !== undefined && a !== null && b !== undefined && b !== null && a !== b) {
    return CONFLICT;
  }
  return a ?? b;
}

function missingOrInvalid(
  m: Record<string, unknown>,
  value: unknown,
  field: string,
  kind: string,
): { ok: false; rejection: Rejection } {
  if (value === CONFLICT) {
    return reject("invalid_field", `${field}: both names are set and differ`);
  }
  if (value === undefined || value === null) {
    const present = Object.keys(m).slice(0, 10).join(", ");
    return reject("missing_field", `${field} is missing (fields present: ${present || "none"})`);
  }
  return reject("invalid_field", `${field} must be ${kind}, got ${typeof value}`);
}

/** ISO text checked for a real date, Unix seconds turned into ISO text; `null` stays `null`, anything else `undefined`. */
function normalizeTimestamp(value: unknown): string | null | undefined {
  if (value === null) return null;
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0 || value > 253402300799) return undefined;
    return new Date(value * 1000).toISOString();
  }
  if (typeof value !== "string") return undefined;
  const parts = ISO_TIMESTAMP.exec(value);
  if (parts === null) return undefined;
  const [, y, mo, d, h, mi, sec, zone, offsetHours, offsetMinutes] = parts;
  // An offset PostgreSQL can store: at most 15:59.
  if (offsetHours !== undefined && (Number(offsetHours) > 15 || Number(offsetMinutes ?? 0) > 59)) return undefined;
  const validDate = isCalendarDate(y, mo, d);
  const hour = h === undefined ? 0 : Number(h);
  const minute = mi === undefined ? 0 : Number(mi);
  const second = sec === undefined ? 0 : Number(sec);
  if (!(validDate && hour < 24 && minute < 60 && second < 60)) return undefined;
  // Without an offset PostgreSQL would read the text in the session's TimeZone: it is UTC.
  if (h === undefined) return `${value}T00:00:00Z`;
  return zone === undefined ? `${value}Z` : value;
}

/** Calendar dates checked lately: an election's votes carry a handful of dates, each checked once. */
const checkedDates = new Map<string, boolean>();

function isCalendarDate(y: string, mo: string, d: string): boolean {
  const key = `${y}-${mo}-${d}`;
  let valid = checkedDates.get(key);
  if (valid === undefined) {
    const year = Number(y), month = Number(mo), day = Number(d);
    // Date.UTC reads years 0 to 99 as 1900 to 1999: those, like year 0, are refused.
    const date = new Date(Date.UTC(year, month - 1, day));
    valid = year >= 1 && date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 &&
      date.getUTCDate() === day;
    if (checkedDates.size >= 1024) checkedDates.clear();
    checkedDates.set(key, valid);
  }
  return valid;
}

function textProblem(text: string, min: number, max: number): string | undefined {
  if (!text.isWellFormed()) return "holds a lone UTF-16 surrogate (not valid Unicode)";
  if (text.includes("\0")) return "holds a NUL character, which PostgreSQL text cannot store";
  // A text no longer than `max` UTF-16 units has at most `max` code points, and a non-empty one at least 1.
  if (text.length <= max && text.length >= min && min <= 1) return undefined;
  // Counting stops past the limit: a 16 KiB body cannot make this slow, but there is no need to count it all.
  let length = 0;
  for (const _ of text) if (++length > max) break;
  if (length < min || length > max) {
    return `must be ${min} to ${max} characters, got ${length > max ? `more than ${max}` : length}`;
  }
  return undefined;
}

/** PostgreSQL refuses zone offsets beyond ±15:59 ("time zone displacement out of range"). */
function reject(reason: RejectReason, detail: string): { ok: false; rejection: Rejection } {
  return { ok: false, rejection: { reason, detail } };
}
