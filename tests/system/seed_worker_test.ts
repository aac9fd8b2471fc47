/**
 * The seed system's other services against a database this service migrated: the validation
 * worker's real order (its audit row first, then the message), zone-less timestamps under a non-UTC
 * database time zone, and every SELECT/INSERT of the seed's services and every view of both seed
 * schemas, with results consistent with the counts.
 */

import assert from "node:assert/strict";
import type postgres from "postgres";
import { migrate } from "../../lib/database/migrations.ts";
import { startService } from "../../lib/service.ts";
import { VoteWriter } from "../../lib/database/writer.ts";
import { createTestDatabase, createTestQueue, results, type TestDatabase, testPool } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { sha256 } from "../support/votes.ts";
import { waitForEvent } from "../support/wait.ts";
import {
  createTestRole,
  loadSchema,
  SEED_TABLES,
  SEED_VIEW_COLUMNS,
  seedSchemas,
  seedStatements,
  tablesOf,
  viewsOf,
} from "../support/seed.ts";

/** What the validation worker does for a valid vote: its audit row (as its INSERT sends it), then the message. */
function workerStep(voter: number, law: string, vote: "oui" | "non", minute: number) {
  // Python's datetime.utcnow().isoformat(): UTC, without an offset.
  const timestamp = `2026-03-01T12:${String(minute).padStart(2, "0")}:00.123456`;
  const hash = sha256(`worker-${voter}:${law}`);
  return {
    hash,
    timestamp,
    // psycopg2 sends a naive datetime as zone-less text: the worker's session reads it in its TimeZone.
    audit: (sql: postgres.Sql) =>
      sql`insert into vote_audit (vote_hash, law_id, vote, status, timestamp, processed_at, metadata)
          values (${hash}, ${law}, ${vote}, 'validated', ${timestamp}::text::timestamp, ${timestamp}::text::timestamp,
                  ${sql.json({ worker_id: "worker-1", validation_timestamp: timestamp })})
          returning id`,
    body: JSON.stringify({
      voter_hash: hash,
      law_id: law,
      vote,
      vote_timestamp: timestamp,
      status: "valid",
      processed_timestamp: timestamp,
    }),
  };
}

async function workerOrder(db: TestDatabase) {
  await using queue = await createTestQueue();
  // The database's time zone, not the server's: the worker's session and the service's both get it.
  await db.sql.unsafe(`alter database ${db.name} set timezone = 'America/Toronto'`);
  const service = await startService(testConfig(db, queue, { BATCH_SIZE: "20", BATCH_TIMEOUT_SECONDS: "0.02" }));
  const worker = testPool(db.url);
  const expected: Record<string, [number, number]> = {};
  const steps = [];
  try {
    // Interleaved with the service consuming: audit row, publish, next vote.
    for (let voter = 0; voter < 120; voter++) {
      const law = `LAW-${voter % 3}`;
      const vote = voter % 4 === 0 ? "non" : "oui";
      const step = workerStep(voter, law, vote, voter % 60);
      await step.audit(worker);
      await queue.publish([step.body]);
      steps.push(step);
      expected[law] ??= [0, 0];
      expected[law][vote === "oui" ? 0 : 1] += 1;
    }
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === steps.length);
    assert.equal(service.aggregator.totals.counted, 120, "every vote the worker recorded first is counted");
    assert.deepEqual(await results(db.sql), expected);

    const rows = await db.sql`select vote_hash, status, "timestamp", metadata from vote_audit order by id`;
    assert.equal(rows.length, 120, "counted in place: one audit row per vote");
    assert.ok(rows.every((r) => r.status === "aggregated"));
    assert.ok(rows.every((r) => r.metadata?.worker_id === "worker-1"), "the worker's columns are kept");
    // The message's zone-less timestamp is UTC; the worker's own value (read as Toronto time) is corrected.
    assert.deepEqual(
      rows.map((r) => (r.timestamp as Date).toISOString()),
      steps.map((s) => `${s.timestamp.slice(0, 23)}Z`),
    );

    // A redelivery of such a vote, and a duplicate attempt (another choice) with its hash.
    const [first] = steps;
    const attempt = JSON.stringify({ ...JSON.parse(first.body), vote: "oui" });
    await queue.publish([first.body, attempt]);
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === steps.length + 2);
    const t = service.aggregator.totals;
    assert.deepEqual([t.counted, t.redelivered, t.duplicates], [120, 1, 1]);
    assert.deepEqual(await results(db.sql), expected, "neither is counted");
    const dups = await db.sql`select vote_hash, choice, attempt_timestamp, attempt_count from duplicate_attempts`;
    assert.deepEqual(
      dups.map((r) => [r.vote_hash, r.choice, (r.attempt_timestamp as Date).toISOString(), r.attempt_count]),
      [[first.hash, "oui", `${first.timestamp.slice(0, 23)}Z`, 1]],
    );
  } finally {
    await worker.end({ timeout: 1 });
    assert.equal(await service.stop(), true);
  }
}

Deno.test("validation worker order on a fresh database, TimeZone America/Toronto: each vote counted once, zone-less is UTC", async () => {
  await using db = await createTestDatabase();
  await workerOrder(db);
});

Deno.test("validation worker order on the seed's system schema, TimeZone America/Toronto", async () => {
  await using role = await createTestRole();
  await using db = await createTestDatabase();
  const [system] = await seedSchemas();
  await loadSchema(db.sql, system, role.name);
  await workerOrder(db);
});

/** Parameters for a seed statement on the seed's tables, by what it does. */
function parametersFor(statement: string): unknown[] {
  const count = new Set([...statement.matchAll(/\$(\d+)/g)].map((m) => m[1])).size;
  if (/INSERT INTO vote_results/i.test(statement)) return ["LAW-1", 2, 1, 3];
  if (/INSERT INTO vote_audit/i.test(statement)) {
    return [sha256("seed-statement"), "LAW-9", "non", "validated", "2026-03-01T12:00:00", "2026-03-01T12:00:01", null];
  }
  return Array.from({ length: count }, () => "LAW-1");
}

for (const schema of [undefined, ...await seedSchemas()]) {
  Deno.test(`seed services' statements and views on a migrated ${schema?.label ?? "fresh database"}`, async () => {
    await using role = await createTestRole();
    await using db = await createTestDatabase();
    if (schema) await loadSchema(db.sql, schema, role.name);
    const sql = testPool(db.url);
    try {
      await migrate(sql);
      await db.sql`insert into laws (law_id, title) values ('LAW-1', 'Loi 1') on conflict do nothing`;
      const v = (n: number, choice: "oui" | "non") => ({
        hash: sha256(`statements-${n}`),
        citizenId: null,
        lawId: n % 2 ? "LAW-1" : "LAW-2",
        choice,
        timestamp: "2026-03-01T12:00:00Z",
      });
      const writer = new VoteWriter(sql, { maxRetryAttempts: 1 });
      await writer.commit([v(1, "oui"), v(2, "non"), v(3, "non"), v(4, "oui"), v(5, "oui")]);
      await writer.commit([{ ...v(1, "oui"), choice: "non" }, { ...v(1, "oui"), timestamp: null }]);

      for (const { label, statements } of await seedStatements()) {
        let ran = 0;
        for (const { source, sql: text } of statements) {
          const foreign = tablesOf(text).filter((t) => !SEED_TABLES.has(t));
          if (foreign.length) {
            console.log(`SKIP ${label} ${source}: ${foreign.join(", ")} belong to another subsystem (no seed schema)`);
            continue;
          }
          ran += 1;
          const before = await results(db.sql);
          const rows = await sql.unsafe(text, parametersFor(text) as postgres.ParameterOrJSON<never>[]);
          if (/INSERT INTO vote_results/i.test(text)) {
            assert.deepEqual((await results(db.sql))["LAW-1"], [before["LAW-1"][0] + 2, before["LAW-1"][1] + 1]);
          } else if (/INSERT INTO vote_audit/i.test(text)) {
            assert.equal(rows.length, 1, `${source}: returns the new id`);
            await db.sql`delete from vote_audit where id = ${rows[0].id}`;
          } else if (/FROM vote_results/i.test(text)) {
            assert.ok(rows.length > 0, `${source} answers`);
            for (const row of rows) {
              const law = row.law_id ?? "LAW-1";
              assert.deepEqual([Number(row.oui_count), Number(row.non_count)], before[law], `${source}: the counts`);
              if ("total_votes" in row) assert.equal(Number(row.total_votes), before[law][0] + before[law][1]);
            }
          } else if (/FROM laws/i.test(text)) {
            assert.equal(rows.length, 1, `${source}: the law exists`);
          }
        }
        // The seed aggregator's upsert and two reads, the worker's insert, the results API's three reads.
        assert.equal(ran, 7, `${label}: every statement on the seed's tables ran`);
      }

      const counts = await results(db.sql);
      const summary = await db.sql`select law_id, oui_count, non_count, total_votes from vote_summary`;
      for (const row of summary) {
        assert.deepEqual([Number(row.oui_count), Number(row.non_count)], counts[row.law_id]);
        assert.equal(Number(row.total_votes), Number(row.oui_count) + Number(row.non_count));
      }
      const [recent] = await db.sql`select count(*)::int as n from recent_audit_entries where status = 'aggregated'`;
      assert.equal(recent.n, 5);
      const top = await db.sql`select vote_hash, attempt_count from top_duplicate_attempts`;
      assert.deepEqual(top.map((r) => [r.vote_hash, r.attempt_count]), [[sha256("statements-1"), 2]]);
      for (const view of Object.keys(SEED_VIEW_COLUMNS)) await db.sql.unsafe(`select * from ${view}`);

      // Every view of both seed schemas, as the seed defines it, runs on the migrated tables.
      for (const seed of await seedSchemas()) {
        for (const { name, query } of viewsOf(seed.sql)) {
          const rows = await db.sql.unsafe(query);
          if (name === "vote_summary" || name === "vote_statistics") {
            assert.deepEqual(
              Object.fromEntries(rows.map((r) => [r.law_id, [Number(r.oui_count), Number(r.non_count)]])),
              counts,
              `${seed.label} ${name}`,
            );
          }
        }
      }
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
}
