/**
 * Votes for tests, the benchmark and the load publisher: message bodies in both
 * upstream shapes, the one seeded pseudo-random generator, mixes of votes whose
 * exact outcome is known in advance, and the assertions that check it.
 *
 * @module
 */

import type { GetMessage } from "amqplib";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type postgres from "postgres";
import { REJECT_REASON_HEADER } from "../../lib/broker/dead_letter.ts";
import { seededRandom } from "./random.ts";
import { results } from "./servers.ts";

export { seededRandom };

/** SHA-256 hex of `text`: the hash of a test voter. */
export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** A vote message body in the seed publisher's shape. */
export function seedVote(
  voter: number,
  lawId: string,
  choice: string,
  extra: Record<string, unknown> = {},
): string {
  return JSON.stringify({
    vote_hash: sha256(`voter-${voter}:${lawId}`),
    citizen_id: `citizen-${voter}`,
    law_id: lawId,
    choice,
    timestamp: "2026-11-22T10:00:00Z",
    metadata: { source: "test" },
    ...extra,
  });
}

/** A vote message body in the validation worker's shape. */
export function workerVote(voter: number, lawId: string, vote: string): string {
  return JSON.stringify({
    voter_hash: sha256(`voter-${voter}:${lawId}`),
    law_id: lawId,
    vote,
    vote_timestamp: "2026-11-22T10:00:01.123456+01:00",
    status: "validated",
    processed_timestamp: "2026-11-22T10:00:02Z",
  });
}

/** What was published, and what the database and the DLQ must hold once it is all consumed. */
export interface Mix {
  /** Message bodies in publishing order. */
  bodies: string[];
  /** `vote_results` exactly: law → [oui, non]. */
  expected: Record<string, [number, number]>;
  /** Every content sent for each hash (the vote and its duplicate attempts), as {@link contentKey}s. */
  contents: Map<string, Set<string>>;
  /** Malformed messages: their unique id → the reject reason the DLQ must show. */
  malformed: Map<string, string>;
  /** How many of each kind were published. */
  sent: { valid: number; duplicates: number; copies: number; malformed: number };
}

/** Options of {@link buildMix}. */
export interface MixOptions {
  /** Distinct valid votes. */
  valid: number;
  /** Laws they are spread over. @default 10 */
  laws?: number;
  /** Duplicate attempts: same hash, law and choice as a counted vote, another timestamp (some published twice). */
  duplicates?: number;
  /** Exact copies of valid votes (redeliveries by the publisher: not duplicates). */
  copies?: number;
  /** Malformed messages, each with a unique id in its body. */
  malformed?: number;
  /** Shuffle everything (else valid votes first, the rest interleaved from the middle on). @default true */
  shuffle?: boolean;
  /** Seed of the pseudo-random choices. */
  seed?: number;
  /** First voter number (so two mixes in one database do not collide). @default 0 */
  voterBase?: number;
}

/** The key of one vote's content: what makes two votes with one hash the same vote or a duplicate attempt. */
export function contentKey(
  hash: string,
  lawId: string,
  choice: string,
  epochMs: number | null,
  citizenId: string | null,
): string {
  return [hash, lawId, choice, epochMs ?? "", citizenId ?? ""].join("|");
}

/**
 * A mix of valid votes in both upstream shapes, duplicate attempts, exact
 * copies and malformed messages. Duplicate attempts keep their vote's law and
 * choice (only the timestamp differs), so `vote_results` is the same whichever
 * copy of a hash arrives first.
 */
export function buildMix(options: MixOptions): Mix {
  const rand = seededRandom(options.seed ?? 1);
  const laws = options.laws ?? 10;
  const base = options.voterBase ?? 0;
  const votes: { body: string; voter: number; law: string; choice: "oui" | "non"; hash: string }[] = [];
  const expected: Record<string, [number, number]> = {};
  const contents = new Map<string, Set<string>>();
  for (let i = 0; i < options.valid; i++) {
    const law = `L${String(i % laws).padStart(2, "0")}`;
    const choice = rand() < 0.55 ? "oui" : "non";
    const voter = base + i;
    const hash = sha256(`voter-${voter}:${law}`); // as seedVote and workerVote hash it
    const body = i % 2 === 0
      ? seedVote(voter, law, choice)
      : workerVote(voter, law, rand() < 0.5 ? choice.toUpperCase() : choice);
    votes.push({ body, voter, law, choice, hash });
    expected[law] ??= [0, 0];
    expected[law][choice === "oui" ? 0 : 1] += 1;
    const parsed = JSON.parse(body);
    const ts = parsed.timestamp ?? parsed.vote_timestamp;
    contents.set(hash, new Set([contentKey(hash, law, choice, Date.parse(ts), parsed.citizen_id ?? null)]));
  }

  const extras: string[] = [];
  for (let d = 0; d < (options.duplicates ?? 0); d++) {
    const vote = votes[Math.floor(rand() * votes.length)];
    const ts = new Date(Date.UTC(2026, 10, 22, 12, 0, 0) + d * 1000).toISOString();
    const body = seedVote(vote.voter, vote.law, vote.choice, { timestamp: ts });
    contents.get(vote.hash)!.add(contentKey(vote.hash, vote.law, vote.choice, Date.parse(ts), `citizen-${vote.voter}`));
    extras.push(body);
    if (d % 4 === 0) extras.push(body); // the same attempt twice: recorded once
  }
  const duplicates = extras.length;
  for (let c = 0; c < (options.copies ?? 0); c++) extras.push(votes[Math.floor(rand() * votes.length)].body);

  const malformed = new Map<string, string>();
  const runId = crypto.randomUUID().slice(0, 8);
  for (let m = 0; m < (options.malformed ?? 0); m++) {
    const id = `mal-${runId}-${m}`;
    const kind = m % 5;
    const [body, reason] = kind === 0
      ? [`not json ${id}`, "invalid_json"]
      : kind === 1
      ? [JSON.stringify([id]), "not_an_object"]
      : kind === 2
      ? [JSON.stringify({ mid: id, law_id: "L00", choice: "oui" }), "missing_field"]
      : kind === 3
      ? [seedVote(base + m, "L00", "blanc", { mid: id }), "unknown_choice"]
      : [JSON.stringify({ mid: id, vote_hash: "xyz", law_id: "L00", choice: "oui" }), "invalid_field"];
    malformed.set(id, reason);
    extras.push(body);
  }

  let bodies: string[];
  if (options.shuffle ?? true) {
    bodies = [...votes.map((v) => v.body), ...extras];
    for (let i = bodies.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [bodies[i], bodies[j]] = [bodies[j], bodies[i]];
    }
  } else {
    bodies = votes.map((v) => v.body);
    for (const extra of extras) bodies.splice(Math.floor(bodies.length / 2 + rand() * bodies.length / 2), 0, extra);
  }
  return {
    bodies,
    expected,
    contents,
    malformed,
    sent: { valid: votes.length, duplicates, copies: options.copies ?? 0, malformed: malformed.size },
  };
}

/** Adds `b`'s expected results to `a`'s. */
export function addResults(
  a: Record<string, [number, number]>,
  b: Record<string, [number, number]>,
): Record<string, [number, number]> {
  const sum: Record<string, [number, number]> = structuredClone(a);
  for (const [law, [oui, non]] of Object.entries(b)) {
    sum[law] ??= [0, 0];
    sum[law][0] += oui;
    sum[law][1] += non;
  }
  return Object.fromEntries(Object.entries(sum).sort(([x], [y]) => x < y ? -1 : 1));
}

/** Merges the content sets of several mixes. */
export function mergeContents(...mixes: Mix[]): Map<string, Set<string>> {
  const merged = new Map<string, Set<string>>();
  for (const mix of mixes) {
    for (const [hash, set] of mix.contents) merged.set(hash, new Set([...(merged.get(hash) ?? []), ...set]));
  }
  return merged;
}

/**
 * Asserts the database holds exactly what `expected` and `contents` say:
 * `vote_results` equal to the distinct valid votes; one `vote_audit` row per
 * hash, holding one of the contents sent for it; `duplicate_attempts` holding
 * exactly the other contents, each once (so redeliveries and exact copies are
 * not there); and every counted vote counted by exactly one committed batch.
 */
export async function assertExactOutcome(
  sql: postgres.Sql,
  expected: Record<string, [number, number]>,
  contents: Map<string, Set<string>>,
): Promise<void> {
  assert.deepEqual(await results(sql), expected, "vote_results equals the distinct valid votes");

  const key = (
    r: { vote_hash: string; law_id: string; choice: string; ms: string | null; citizen_id: string | null },
  ) => contentKey(r.vote_hash, r.law_id, r.choice, r.ms === null ? null : Number(r.ms), r.citizen_id);
  const audit = await sql<
    { vote_hash: string; law_id: string; choice: string; ms: string | null; citizen_id: string | null }[]
  >`
    select vote_hash, law_id, choice, round(extract(epoch from "timestamp") * 1000)::bigint::text as ms, citizen_id
    from vote_audit`;
  assert.equal(audit.length, contents.size, "one vote_audit row per distinct hash");
  const stored = new Map<string, string>();
  for (const row of audit) {
    const k = key(row);
    assert.ok(contents.get(row.vote_hash)?.has(k), `vote_audit holds a vote that was sent: ${k}`);
    stored.set(row.vote_hash, k);
  }

  const dups = await sql<
    { vote_hash: string; law_id: string; choice: string; ms: string | null; citizen_id: string | null }[]
  >`
    select vote_hash, law_id, choice, round(extract(epoch from attempt_timestamp) * 1000)::bigint::text as ms, citizen_id
    from duplicate_attempts`;
  const expectedDups = new Set<string>();
  for (const [hash, set] of contents) for (const k of set) if (k !== stored.get(hash)) expectedDups.add(k);
  const actualDups = dups.map(key);
  assert.equal(new Set(actualDups).size, actualDups.length, "each duplicate attempt recorded once");
  assert.deepEqual(
    new Set(actualDups),
    expectedDups,
    "duplicate_attempts holds exactly the duplicate attempts sent (no redeliveries, no copies)",
  );

  const [{ counted }] = await sql<{ counted: number }[]>`
    select coalesce(sum(votes_counted), 0)::int as counted from aggregation_stats`;
  assert.equal(counted, contents.size, "every distinct vote counted by exactly one committed batch");
}

/**
 * Asserts the dead-letter queue holds every malformed message of `mix` at
 * least once, each with its reject reason, and nothing else.
 *
 * @returns how many messages were there more than once (dead-lettering is at-least-once: see the suite's notes)
 */
export function assertDeadLetters(messages: GetMessage[], malformed: Map<string, string>): number {
  const seen = new Map<string, number>();
  for (const message of messages) {
    const text = message.content.toString();
    const id = text.match(/mal-[0-9a-f]{8}-\d+/)?.[0];
    assert.ok(
      id !== undefined && malformed.has(id),
      `only malformed messages are dead-lettered, got ${text.slice(0, 200)}`,
    );
    assert.equal(message.properties.headers?.[REJECT_REASON_HEADER], malformed.get(id), `reject reason of ${id}`);
    seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  const missing = [...malformed.keys()].filter((id) => !seen.has(id));
  assert.deepEqual(missing, [], "every malformed message is in the DLQ");
  return messages.length - seen.size;
}
