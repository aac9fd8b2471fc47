/**
 * Property test of the parser against the real database: generated JSON values
 * and bodies (a seeded generator, so a failure replays: `VOTE_PROPERTY_SEED=n`).
 *
 * - `parseVote` never throws, whatever the bytes;
 * - every vote it accepts is stored, unchanged, by the real schema through the
 *   real writer (no vote refused, so no batch bisection);
 * - near-boundary field values that PostgreSQL refuses, or would store altered,
 *   are rejected by the parser.
 *
 * @module
 */

import assert from "node:assert/strict";
import { migrate } from "../lib/database/migrations.ts";
import { parseVote, type Vote } from "../lib/vote.ts";
import { VoteWriter } from "../lib/database/writer.ts";
import { createTestDatabase, testPool } from "./support/servers.ts";
import { sha256 } from "./support/votes.ts";

const SEED = Number(Deno.env.get("VOTE_PROPERTY_SEED") ?? 20261122);
const CASES = 3000;

/** mulberry32: small, seedable, good enough to spread cases. */
function generator(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1));
  const pick = <T>(items: readonly T[]): T => items[int(0, items.length - 1)];
  return { next, int, pick };
}
type Random = ReturnType<typeof generator>;

// Characters that break naive code: multi-unit, combining, escapes, SQL and array-literal syntax, whitespace.
const ATOMS = [
  "a",
  "Z",
  "9",
  "-",
  " ",
  "\t",
  "é",
  "e\u0301",
  "😀",
  "🗳️",
  "𝕏",
  "\u00a0",
  "\ufeff",
  "\u2028",
  '"',
  "\\",
  "'",
  ",",
  "{",
  "}",
  "NULL",
  "\u0000",
  "\ud800",
  "\udfff",
  "\uffff",
];

function text(r: Random, maxCodePoints: number): string {
  let s = "";
  const n = r.next() < 0.7
    ? r.int(1, maxCodePoints)
    : r.pick([0, 1, maxCodePoints - 1, maxCodePoints, maxCodePoints + 1, maxCodePoints + 2]);
  // Mostly clean text, so that the boundaries are reached by text the parser would otherwise accept.
  const dirty = r.next() < 0.2;
  for (let i = 0; i < n; i++) s += dirty ? r.pick(ATOMS) : r.pick(["a", "é", "😀", "-", "7", " ", "𝕏"]);
  return s;
}

function digits(n: number, width: number): string {
  return String(n).padStart(width, "0");
}

/** ISO-shaped timestamps around every limit: calendar, clock, fraction, zone offset. */
function timestamp(r: Random): unknown {
  const roll = r.next();
  if (roll < 0.1) return r.pick([null, 0, -1, 1763805600, 1763805600.5, 253402300799, 253402300800, 1e300, "", "now"]);
  if (roll < 0.12) return r.pick([true, {}, [], "2026-11-22T10:00:00Z "]);
  // Each part is usually valid and sometimes at or past its limit, so that both sides of every limit are reached.
  const part = (valid: () => number, edges: number[]) => r.next() < 0.85 ? valid() : r.pick(edges);
  const year = part(() => r.pick([1, 1970, 2026, 9999]), [0, 1, 9999]);
  const month = part(() => r.int(1, 12), [0, 1, 12, 13]);
  const day = part(() => r.int(1, 28), [0, 29, 30, 31, 32]);
  let s = `${digits(year, 4)}-${digits(month, 2)}-${digits(day, 2)}`;
  if (r.next() < 0.9) {
    s += r.pick(["T", " "]) + digits(part(() => r.int(0, 23), [23, 24]), 2) + ":" +
      digits(part(() => r.int(0, 59), [59, 60]), 2);
    if (r.next() < 0.8) s += ":" + digits(part(() => r.int(0, 59), [59, 60]), 2);
    if (r.next() < 0.3) s += "." + "1234567".slice(0, part(() => r.int(1, 6), [6, 7]));
    const zone = r.next();
    if (zone < 0.2) s += "Z";
    else if (zone < 0.9) {
      const hours = digits(part(() => r.int(0, 14), [14, 15, 16, 99]), 2);
      const minutes = digits(part(() => r.pick([0, 30, 45]), [59, 60, 99]), 2);
      s += r.pick(["+", "-"]) + hours + r.pick([`:${minutes}`, minutes, ""]);
    }
  }
  return s;
}

/** Any JSON value, shallow. */
function jsonValue(r: Random, depth = 0): unknown {
  const roll = r.next();
  if (roll < 0.15) return null;
  if (roll < 0.3) return r.pick([0, -0, 1, -1, 1.5, 1e21, 2 ** 53 + 1, -1e-7]);
  if (roll < 0.4) return r.next() < 0.5;
  if (roll < 0.7 || depth > 2) return text(r, r.pick([3, 50, 100]));
  if (roll < 0.85) return Array.from({ length: r.int(0, 3) }, () => jsonValue(r, depth + 1));
  return Object.fromEntries(Array.from({ length: r.int(0, 3) }, () => [text(r, 3), jsonValue(r, depth + 1)]));
}

let voter = 0;
/** A body shaped like one of the two upstream messages, with each field sometimes wrong. */
function voteBody(r: Random): Uint8Array {
  const often = <T>(good: () => T): unknown => r.next() < 0.95 ? good() : jsonValue(r);
  const hash = sha256(`voter-${voter++}`);
  const worker = r.next() < 0.5;
  const fields: [string, unknown][] = [
    [worker ? "voter_hash" : "vote_hash", often(() => r.next() < 0.9 ? hash : hash.toUpperCase())],
    ["law_id", often(() => text(r, 50))],
    [worker ? "vote" : "choice", often(() => r.pick(["oui", "non", " Non ", "OUI\n", "nein", "", "\u00a0oui"]))],
    [worker ? "vote_timestamp" : "timestamp", timestamp(r)],
  ];
  if (!worker && r.next() < 0.8) fields.push(["citizen_id", often(() => text(r, 100))]);
  if (r.next() < 0.3) fields.push(["metadata", jsonValue(r)]);
  // JSON.stringify writes lone surrogates as \ud800 escapes, so they reach JSON.parse as they would from Python.
  let json = `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${v === undefined ? "null" : JSON.stringify(v)}`)}}`;
  if (r.next() < 0.05) json = json.replace(/^\{/, `{"law_id":${JSON.stringify(text(r, 50))},`); // a key twice
  const bytes = new TextEncoder().encode(json);
  const mangle = r.next();
  if (mangle < 0.03) return bytes.subarray(0, r.int(0, bytes.length)); // truncated
  if (mangle < 0.06) {
    const copy = bytes.slice();
    copy[r.int(0, copy.length - 1)] = r.int(0, 255); // one byte flipped
    return copy;
  }
  if (mangle < 0.08) return new TextEncoder().encode(JSON.stringify(jsonValue(r))); // not a vote at all
  return bytes;
}

Deno.test("parseVote property: never throws, and every vote it accepts is stored unchanged by the real schema", async () => {
  const r = generator(SEED);
  const accepted: Vote[] = [];
  const reasons: Record<string, number> = {};
  for (let i = 0; i < CASES; i++) {
    const body = voteBody(r);
    let parsed;
    try {
      parsed = parseVote(body);
    } catch (error) {
      assert.fail(`parseVote threw on ${JSON.stringify(new TextDecoder().decode(body))} (seed ${SEED}): ${error}`);
    }
    if (parsed.ok) accepted.push(parsed.vote);
    else reasons[parsed.rejection.reason] = (reasons[parsed.rejection.reason] ?? 0) + 1;
  }
  // The generator must reach both sides, and every kind of rejection it aims at.
  assert.ok(accepted.length > CASES / 10, `only ${accepted.length} accepted of ${CASES}`);
  for (const reason of ["invalid_json", "not_an_object", "missing_field", "invalid_field", "unknown_choice"]) {
    assert.ok(reasons[reason] > 0, `no ${reason} among ${JSON.stringify(reasons)}`);
  }

  await using db = await createTestDatabase();
  const sql = testPool(db.url);
  try {
    await migrate(sql);
    const writer = new VoteWriter(sql, { maxRetryAttempts: 1, retryDelayMs: 1, instance: "property" });
    // Batches as the service would commit them; a refused vote would show in `rejected`.
    for (let i = 0; i < accepted.length; i += 500) {
      const result = await writer.commit(accepted.slice(i, i + 500));
      const refused = result.rejected.map(({ index, detail }) => `${JSON.stringify(accepted[i + index])}: ${detail}`);
      assert.deepEqual(refused, [], `the database refused votes the parser accepted (seed ${SEED})`);
      assert.equal(result.transactions, 1);
    }
    // Stored unchanged: a lone surrogate would come back as U+FFFD, an unquoted NULL as null.
    const stored = await db.sql<{ vote_hash: string; law_id: string; citizen_id: string | null }[]>`
      select vote_hash, law_id, citizen_id from vote_audit`;
    const byHash = new Map(stored.map((row) => [row.vote_hash, row]));
    for (const vote of accepted) {
      const row = byHash.get(vote.hash);
      assert.ok(row, `vote ${vote.hash} not stored`);
      // The first copy of a hash wins; the generator gives each body its own hash, but a body may repeat one.
      if (row.law_id === vote.lawId) assert.equal(row.citizen_id, vote.citizenId);
    }
    const lawIds = new Set(stored.map((row) => row.law_id));
    for (const vote of accepted) assert.ok(lawIds.has(vote.lawId), `law_id ${JSON.stringify(vote.lawId)} altered`);
  } finally {
    await sql.end({ timeout: 1 });
  }
});

Deno.test("parseVote property: near-boundary values PostgreSQL refuses or alters are rejected by the parser", async () => {
  const r = generator(SEED + 1);
  const hash = "ab".repeat(32);
  const candidates: { lawId: string; citizenId: string | null; timestamp: unknown }[] = [];
  for (let i = 0; i < 400; i++) {
    candidates.push({ lawId: text(r, 50), citizenId: r.next() < 0.2 ? null : text(r, 100), timestamp: timestamp(r) });
  }
  await using db = await createTestDatabase();
  // The column types of vote_audit (sql/001_schema.sql).
  await db.sql`create table scratch (law_id varchar(50) not null, citizen_id varchar(100), ts timestamptz)`;
  let refusedByDatabase = 0;
  for (const c of candidates) {
    // Text parameters cast by the server, as the writer sends them (a timestamptz parameter would be parsed by
    // postgres.js through JavaScript's Date, which takes offsets PostgreSQL refuses). Unix seconds are the parser's to convert; only text reaches the database as sent.
    if (typeof c.timestamp !== "string" && c.timestamp !== null) continue;
    let storedUnchanged: boolean;
    try {
      const [row] = await db.sql<{ law_id: string; citizen_id: string | null }[]>`
        insert into scratch values (${c.lawId}::text, ${c.citizenId}::text, ${c.timestamp}::text::timestamptz)
        returning law_id, citizen_id`;
      storedUnchanged = row.law_id === c.lawId && row.citizen_id === c.citizenId && c.lawId.length > 0;
    } catch {
      storedUnchanged = false;
    }
    if (storedUnchanged) continue;
    refusedByDatabase++;
    const body = JSON.stringify({
      vote_hash: hash,
      law_id: c.lawId,
      citizen_id: c.citizenId,
      choice: "oui",
      timestamp: c.timestamp,
    });
    const parsed = parseVote(new TextEncoder().encode(body));
    assert.equal(parsed.ok, false, `accepted ${body}, which the database refuses or alters (seed ${SEED + 1})`);
  }
  assert.ok(refusedByDatabase > 20, `only ${refusedByDatabase} candidates refused by the database: a weak test`);
});
