import assert from "node:assert/strict";
import { MAX_BODY_BYTES, parseVote, type RejectReason } from "../lib/vote.ts";

const HASH = "ab".repeat(32);
const encode = (value: unknown) => new TextEncoder().encode(typeof value === "string" ? value : JSON.stringify(value));

Deno.test("parseVote: the seed publisher's shape", () => {
  const parsed = parseVote(encode({
    vote_hash: HASH.toUpperCase(),
    citizen_id: "c-1",
    law_id: "LAW-2026-001",
    choice: "OUI",
    timestamp: "2026-11-22T10:00:00.123456Z",
    metadata: { anything: true },
  }));
  assert.deepEqual(parsed, {
    ok: true,
    vote: {
      hash: HASH,
      citizenId: "c-1",
      lawId: "LAW-2026-001",
      choice: "oui",
      timestamp: "2026-11-22T10:00:00.123456Z",
    },
  });
});

Deno.test("parseVote: the validation worker's shape", () => {
  const parsed = parseVote(encode({
    voter_hash: HASH,
    law_id: "L1",
    vote: " Non ",
    vote_timestamp: 1763805600,
    status: "validated",
    processed_timestamp: "2026-11-22T10:00:00Z",
  }));
  assert.deepEqual(parsed, {
    ok: true,
    vote: { hash: HASH, citizenId: null, lawId: "L1", choice: "non", timestamp: "2025-11-22T10:00:00.000Z" },
  });
});

Deno.test("parseVote: a missing timestamp is accepted as null", () => {
  const parsed = parseVote(encode({ vote_hash: HASH, law_id: "L1", choice: "oui" }));
  assert.equal(parsed.ok && parsed.vote.timestamp, null);
});

const base = { vote_hash: HASH, law_id: "L1", choice: "oui", timestamp: "2026-11-22T10:00:00Z" };
const cases: [string, Uint8Array, RejectReason][] = [
  ["not JSON", encode("{nope"), "invalid_json"],
  ["not UTF-8", new Uint8Array([0x7b, 0xff, 0x7d]), "invalid_json"],
  ["a JSON array", encode([base]), "not_an_object"],
  ["JSON null", encode("null"), "not_an_object"],
  ["a JSON string", encode('"vote"'), "not_an_object"],
  ["no hash", encode({ ...base, vote_hash: undefined }), "missing_field"],
  ["a short hash", encode({ ...base, vote_hash: "abc" }), "invalid_field"],
  ["a non-hex hash", encode({ ...base, vote_hash: "z".repeat(64) }), "invalid_field"],
  ["a numeric hash", encode({ ...base, vote_hash: 12 }), "invalid_field"],
  ["two different hashes", encode({ ...base, voter_hash: "cd".repeat(32) }), "invalid_field"],
  ["no law_id", encode({ ...base, law_id: undefined }), "missing_field"],
  ["an empty law_id", encode({ ...base, law_id: "" }), "invalid_field"],
  ["a 51-character law_id", encode({ ...base, law_id: "x".repeat(51) }), "invalid_field"],
  ["a numeric law_id", encode({ ...base, law_id: 7 }), "invalid_field"],
  ["no choice", encode({ ...base, choice: undefined }), "missing_field"],
  ["an unknown choice", encode({ ...base, choice: "peut-être" }), "unknown_choice"],
  ["a boolean choice", encode({ ...base, choice: true }), "invalid_field"],
  ["choice and vote differing", encode({ ...base, vote: "non" }), "invalid_field"],
  ["a numeric citizen_id", encode({ ...base, citizen_id: 5 }), "invalid_field"],
  ["a bad timestamp", encode({ ...base, timestamp: "yesterday" }), "invalid_field"],
  ["February 30th", encode({ ...base, timestamp: "2026-02-30T10:00:00Z" }), "invalid_field"],
  ["hour 25", encode({ ...base, timestamp: "2026-02-03T25:00:00Z" }), "invalid_field"],
  ["an oversized body", encode({ ...base, metadata: "x".repeat(MAX_BODY_BYTES) }), "oversized"],
];
for (const [name, body, reason] of cases) {
  Deno.test(`parseVote: rejects ${name} as ${reason}, with a reason`, () => {
    const parsed = parseVote(body);
    assert.equal(parsed.ok, false);
    if (parsed.ok) return;
    assert.equal(parsed.rejection.reason, reason);
    assert.ok(parsed.rejection.detail.length > 5);
  });
}

// What PostgreSQL stores or refuses, decided here (see lib/vote.ts): one dead-letter instead of a batch bisection.
const hostile: [string, Uint8Array, RejectReason][] = [
  ["a law_id of 51 accented letters", encode({ ...base, law_id: "é".repeat(51) }), "invalid_field"],
  ["a lone surrogate in law_id", encode(`{"vote_hash":"${HASH}","law_id":"L\\ud800","choice":"oui"}`), "invalid_field"],
  ["a NUL in law_id", encode({ ...base, law_id: "L\u0000" }), "invalid_field"],
  [
    "a lone surrogate in citizen_id",
    encode(`{"vote_hash":"${HASH}","law_id":"L","citizen_id":"\\udc00","choice":"oui"}`),
    "invalid_field",
  ],
  ["a NUL in citizen_id", encode({ ...base, citizen_id: "c\u0000" }), "invalid_field"],
  ["a 101-character citizen_id", encode({ ...base, citizen_id: "é".repeat(101) }), "invalid_field"],
  ["an offset of +99:99", encode({ ...base, timestamp: "2026-11-22T10:00:00+99:99" }), "invalid_field"],
  ["an offset of +16:00", encode({ ...base, timestamp: "2026-11-22T10:00:00+16:00" }), "invalid_field"],
  ["an offset of -1600", encode({ ...base, timestamp: "2026-11-22T10:00:00-1600" }), "invalid_field"],
  ["an offset of +16", encode({ ...base, timestamp: "2026-11-22T10:00:00+16" }), "invalid_field"],
  ["an offset of +00:60", encode({ ...base, timestamp: "2026-11-22T10:00:00+00:60" }), "invalid_field"],
  ["year 0000", encode({ ...base, timestamp: "0000-01-01T00:00:00Z" }), "invalid_field"],
  ["a five-digit year", encode({ ...base, timestamp: "10000-01-01T00:00:00Z" }), "invalid_field"],
];
for (const [name, body, reason] of hostile) {
  Deno.test(`parseVote: rejects ${name} as ${reason}, with a reason`, () => {
    const parsed = parseVote(body);
    assert.equal(parsed.ok, false, JSON.stringify(parsed));
    if (parsed.ok) return;
    assert.equal(parsed.rejection.reason, reason);
    assert.ok(parsed.rejection.detail.length > 5);
  });
}

Deno.test("parseVote: lengths count characters (code points), as VARCHAR(n) does", () => {
  const emoji = "😀".repeat(50); // 100 UTF-16 units, 50 characters
  const parsed = parseVote(encode({ ...base, law_id: emoji, citizen_id: "😀".repeat(100) }));
  assert.equal(parsed.ok && parsed.vote.lawId, emoji);
  const tooLong = parseVote(encode({ ...base, law_id: "😀".repeat(51) }));
  assert.equal(!tooLong.ok && tooLong.rejection.detail, "law_id must be 1 to 50 characters, got more than 50");
});

Deno.test("parseVote: offsets up to ±15:59 are accepted, as PostgreSQL accepts them", () => {
  for (const timestamp of ["2026-11-22T10:00:00+15:59", "2026-11-22T10:00:00-1559", "2026-11-22T10:00:00+15"]) {
    const parsed = parseVote(encode({ ...base, timestamp }));
    assert.equal(parsed.ok && parsed.vote.timestamp, timestamp);
  }
});

Deno.test("parseVote: a key given twice: the last one wins, as JSON.parse and Python's json read it", () => {
  const parsed = parseVote(encode(`{"vote_hash":"${HASH}","law_id":"L1","choice":"non","choice":"oui"}`));
  assert.equal(parsed.ok && parsed.vote.choice, "oui");
});

Deno.test("parseVote: whitespace around the choice is ignored; law_id and citizen_id are kept as sent", () => {
  const parsed = parseVote(encode({ ...base, choice: "\t OUI \n", law_id: " L1 ", citizen_id: " c " }));
  assert.deepEqual(parsed.ok && [parsed.vote.choice, parsed.vote.lawId, parsed.vote.citizenId], ["oui", " L1 ", " c "]);
});

Deno.test("parseVote: a timestamp without an offset is UTC (Z appended); one with an offset is kept as sent", () => {
  const timestampOf = (timestamp: string) => {
    const parsed = parseVote(encode({ ...base, timestamp }));
    return parsed.ok ? parsed.vote.timestamp : parsed.rejection.detail;
  };
  assert.equal(timestampOf("2026-03-01T12:00:00.123456"), "2026-03-01T12:00:00.123456Z");
  assert.equal(timestampOf("2026-03-01 12:00"), "2026-03-01 12:00Z");
  assert.equal(timestampOf("2026-03-01"), "2026-03-01T00:00:00Z");
  assert.equal(timestampOf("2026-03-01T12:00:00-05:00"), "2026-03-01T12:00:00-05:00");
  assert.equal(timestampOf("2026-03-01T12:00:00+0100"), "2026-03-01T12:00:00+0100");
  assert.equal(timestampOf("2026-03-01T12:00-05"), "2026-03-01T12:00-05");
});

Deno.test("vote: the size limit is MAX_MESSAGE_BYTES, judged on the size as received before decoding", () => {
  const big = encode({ vote_hash: "a".repeat(64), law_id: "L1", choice: "oui", metadata: "x".repeat(20_000) });
  assert.equal(parseVote(big).ok, false);
  assert.equal(parseVote(big, { maxBytes: 32 * 1024 }).ok, true);
  // Only the first bytes were kept of a 10 MB body: its size decides, nothing is decoded.
  const cut = parseVote(encode("{"), { maxBytes: 1024, size: 10_485_760 });
  assert.deepEqual(cut.ok ? undefined : cut.rejection.reason, "oversized");
  assert.match(cut.ok ? "" : cut.rejection.detail, /10485760 bytes, the limit is 1024/);
});
