import assert from "node:assert/strict";
import { migrate } from "../../lib/database/migrations.ts";
import type { Vote } from "../../lib/vote.ts";
import { RetryError, VoteWriter } from "../../lib/database/writer.ts";
import { createTestDatabase, results, testPool } from "../support/servers.ts";
import { sha256 } from "../support/votes.ts";

function vote(voter: number, lawId: string, choice: "oui" | "non", timestamp = "2026-11-22T10:00:00Z"): Vote {
  return { hash: sha256(`${voter}:${lawId}`), citizenId: `c${voter}`, lawId, choice, timestamp };
}

async function withWriter(
  fn: (writer: VoteWriter, db: Awaited<ReturnType<typeof createTestDatabase>>) => Promise<void>,
) {
  await using db = await createTestDatabase();
  const sql = testPool(db.url, 4);
  try {
    await migrate(sql);
    await fn(new VoteWriter(sql, { maxRetryAttempts: 2, retryDelayMs: 1, instance: "test" }), db);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

Deno.test("writer: counts each distinct vote once, per law and choice, with a stats row", async () => {
  await withWriter(async (writer, db) => {
    const votes = [vote(1, "L1", "oui"), vote(2, "L1", "non"), vote(3, "L2", "oui"), vote(4, "L1", "oui")];
    const result = await writer.commit(votes, 12);
    assert.equal(result.counted, 4);
    assert.equal(result.duplicates, 0);
    assert.equal(result.redelivered, 0);
    assert.deepEqual(await results(db.sql), { L1: [2, 1], L2: [1, 0] });
    assert.deepEqual(
      result.laws.map((l) => [l.lawId, l.ouiCount, l.nonCount, l.ouiAdded, l.nonAdded]),
      [["L1", 2, 1, 2, 1], ["L2", 1, 0, 1, 0]],
    );
    const [stats] = await db.sql`select batch_size, votes_counted, processing_time_ms, instance from aggregation_stats`;
    assert.deepEqual({ ...stats }, { batch_size: 4, votes_counted: 4, processing_time_ms: 12, instance: "test" });
    const [{ count }] = await db.sql`select count(*)::int from vote_audit`;
    assert.equal(count, 4);
  });
});

Deno.test("writer: a redelivered batch is a silent no-op", async () => {
  await withWriter(async (writer, db) => {
    const votes = [vote(1, "L1", "oui"), vote(2, "L1", "non")];
    await writer.commit(votes);
    const again = await writer.commit(votes);
    assert.deepEqual([again.counted, again.duplicates, again.redelivered], [0, 0, 2]);
    assert.deepEqual(await results(db.sql), { L1: [1, 1] });
    const [{ count }] = await db.sql`select count(*)::int from duplicate_attempts`;
    assert.equal(count, 0, "redeliveries are not duplicate attempts");
  });
});

Deno.test("writer: a different vote with a counted hash is a duplicate attempt, recorded once", async () => {
  await withWriter(async (writer, db) => {
    await writer.commit([vote(1, "L1", "oui")]);
    const otherChoice = { ...vote(1, "L1", "oui"), choice: "non" as const };
    const otherTime = vote(1, "L1", "oui", "2026-11-22T11:00:00Z");
    const first = await writer.commit([otherChoice, otherTime]);
    assert.deepEqual([first.counted, first.duplicates, first.redelivered], [0, 2, 0]);
    // The same attempts delivered again are redeliveries of attempts, not new attempts.
    const again = await writer.commit([otherChoice, otherTime]);
    assert.deepEqual([again.counted, again.duplicates, again.redelivered], [0, 0, 2]);
    assert.deepEqual(await results(db.sql), { L1: [1, 0] });
    const rows = await db.sql`select choice, attempt_timestamp from duplicate_attempts order by id`;
    assert.equal(rows.length, 2);
    const [summary] = await db.sql`select duplicate_count::int from duplicate_summary where law_id = 'L1'`;
    assert.equal(summary.duplicate_count, 2);
  });
});

Deno.test("writer: within one batch the first copy wins; identical copies are no-ops, others duplicates", async () => {
  await withWriter(async (writer, db) => {
    const first = vote(1, "L1", "non");
    const result = await writer.commit([first, { ...first }, { ...first, choice: "oui" }, vote(2, "L1", "oui")]);
    assert.deepEqual([result.counted, result.duplicates, result.redelivered], [2, 1, 1]);
    assert.deepEqual(await results(db.sql), { L1: [1, 1] });
    const [stored] = await db.sql`select choice from vote_audit where vote_hash = ${first.hash}`;
    assert.equal(stored.choice, "non");
  });
});

Deno.test("writer: a vote the database refuses is isolated and reported; the rest are counted", async () => {
  await withWriter(async (writer, db) => {
    const poison = vote(3, "L\u0000BAD", "oui");
    const votes = [vote(1, "L1", "oui"), vote(2, "L1", "non"), poison, vote(4, "L2", "oui"), vote(5, "L2", "non")];
    const result = await writer.commit(votes);
    assert.equal(result.counted, 4);
    assert.equal(result.rejected.length, 1);
    assert.equal(result.rejected[0].index, 2);
    assert.match(result.rejected[0].detail, /0x00/);
    assert.deepEqual(await results(db.sql), { L1: [1, 1], L2: [1, 1] });
  });
});

Deno.test("writer: concurrent writers on overlapping batches count exactly, without deadlocks", async () => {
  await withWriter(async (_writer, db) => {
    const pools = Array.from({ length: 3 }, () => testPool(db.url));
    try {
      const laws = ["A", "B", "C", "D", "E"];
      const all = Array.from({ length: 3000 }, (_, i) => vote(i, laws[i % 5], i % 3 ? "oui" : "non"));
      // Each writer sees every vote, in a different order and batching: a worst case of redeliveries.
      await Promise.all(pools.map(async (sql, w) => {
        const writer = new VoteWriter(sql, { maxRetryAttempts: 1 });
        const order = w === 1 ? [...all].reverse() : w === 2 ? all.filter((_, i) => i % 2).concat(all) : all;
        for (let i = 0; i < order.length; i += 150) await writer.commit(order.slice(i, i + 150));
      }));
      const expected: Record<string, [number, number]> = {};
      for (const v of all) {
        expected[v.lawId] ??= [0, 0];
        expected[v.lawId][v.choice === "oui" ? 0 : 1] += 1;
      }
      assert.deepEqual(await results(db.sql), expected);
      const [{ count }] = await db.sql`select count(*)::int from duplicate_attempts`;
      assert.equal(count, 0);
    } finally {
      await Promise.all(pools.map((sql) => sql.end({ timeout: 1 })));
    }
  });
});

Deno.test("writer: an unreachable database exhausts the retry budget with a RetryError", async () => {
  const sql = testPool("postgres://postgres@127.0.0.1:1/none", 1);
  const retries: number[] = [];
  const writer = new VoteWriter(sql, { maxRetryAttempts: 3, retryDelayMs: 1, onRetry: (_e, n) => retries.push(n) });
  try {
    await assert.rejects(writer.commit([vote(1, "L1", "oui")]), (error: unknown) => {
      assert.ok(error instanceof RetryError);
      assert.match(error.message, /after 3 attempt/);
      return true;
    });
    assert.deepEqual(retries, [1, 2]);
  } finally {
    await sql.end({ timeout: 1 });
  }
});
