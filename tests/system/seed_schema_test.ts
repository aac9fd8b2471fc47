/**
 * The service on the seed system's databases: each seed schema (the project's fixtures, and the real
 * files when `../shared/seed-system/` exists) and this service's own 001 schema, holding seed-era
 * rows, migrated in place (no row changed), then a mixed stream drained through the real service and
 * compared exactly; a migration that cannot proceed names the file, the object and what to do.
 */

import assert from "node:assert/strict";
import type postgres from "postgres";
import { migrate, MIGRATIONS } from "../../lib/database/migrations.ts";
import { startService } from "../../lib/service.ts";
import { createTestDatabase, createTestQueue, results, type TestDatabase, testPool } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { seedVote, sha256, workerVote } from "../support/votes.ts";
import { waitForEvent } from "../support/wait.ts";
import { createTestRole, loadSchema, type SchemaKind, SEED_VIEW_COLUMNS, seedSchemas } from "../support/seed.ts";

// A seed-era counted vote; the stream carries a different vote with its hash (a duplicate attempt).
const COUNTED_VOTER = 9000;
const COUNTED_HASH = sha256(`voter-${COUNTED_VOTER}:LAW-1`);
// The stream's vote whose audit row the validation worker wrote before the switch ('validated', still queued).
const QUEUED_VOTER = 8;

/** A mixed stream in both upstream shapes, with duplicates, redeliveries and a malformed message. */
function mixedStream() {
  const valid: string[] = [];
  const expected: Record<string, [number, number]> = {};
  for (let voter = 0; voter < 240; voter++) {
    const law = `LAW-${voter % 3}`;
    const choice = voter % 3 === 0 ? "non" : "oui";
    valid.push(voter % 2 ? seedVote(voter, law, choice) : workerVote(voter, law, choice));
    expected[law] ??= [0, 0];
    expected[law][choice === "oui" ? 0 : 1] += 1;
  }
  const duplicates = [seedVote(1, "LAW-1", "non"), seedVote(COUNTED_VOTER, "LAW-1", "non")];
  const redelivered = [valid[10], valid[QUEUED_VOTER]];
  const malformed = ["not json"];
  return {
    bodies: [...valid.slice(0, 120), ...malformed, ...duplicates, ...valid.slice(120), ...redelivered],
    expected,
    counts: { counted: valid.length, duplicates: duplicates.length, redelivered: redelivered.length, dead: 1 },
  };
}

/** Rows the seed system (or this service before 002) wrote, per starting schema. */
async function addSeedEraRows(sql: postgres.Sql, kind: SchemaKind | "own") {
  const h = (n: number) => sha256(`seed-era-${n}`);
  const queuedHash = sha256(`voter-${QUEUED_VOTER}:LAW-${QUEUED_VOTER % 3}`);
  if (kind === "system") {
    await sql`insert into vote_results (law_id, oui_count, non_count, total_votes)
              values ('LAW-1', 5, 3, 8), ('law-old', 2, 0, 2)`;
    // Several rows per hash, as the validation worker writes them.
    await sql`insert into vote_audit (vote_hash, law_id, vote, status, "timestamp", processed_at, error_message, metadata)
      values (${
      h(1)
    }, 'LAW-1', 'oui', 'validated', '2026-01-01T10:00:00Z', '2026-01-01T10:00:01Z', null, '{"worker_id":"w1"}'),
             (${h(1)}, 'LAW-1', 'oui', 'duplicate', '2026-01-01T10:05:00Z', '2026-01-01T10:05:01Z', null, null),
             (${h(2)}, 'LAW-1', 'non', 'invalid', '2026-01-01T10:06:00Z', '2026-01-01T10:06:01Z', 'unknown hash', null),
             (${COUNTED_HASH}, 'LAW-1', 'oui', 'aggregated', '2026-01-01T09:00:00Z', '2026-01-01T09:00:01Z', null, null),
             (${queuedHash}, ${`LAW-${QUEUED_VOTER % 3}`}, 'oui', 'validated', '2026-11-22T09:00:01.123456Z',
              '2026-11-22T09:00:02Z', null, '{"worker_id":"w2"}')`;
    await sql`insert into duplicate_attempts (vote_hash, law_id, attempt_count, first_attempt_at, last_attempt_at)
              values (${h(1)}, 'LAW-1', 3, '2026-01-01T10:05:00Z', '2026-01-01T10:15:00Z')`;
  } else if (kind === "aggregation") {
    await sql`insert into vote_results (law_id, oui_count, non_count) values ('LAW-1', 5, 3), ('law-old', 2, 0)`;
    await sql`insert into vote_audit (vote_hash, citizen_id, law_id, choice, "timestamp")
              values (${COUNTED_HASH}, 'c-9000', 'LAW-1', 'oui', '2026-01-01 09:00:00'),
                     (${h(2)}, 'c-2', 'LAW-1', 'non', '2026-01-01 10:00:00')`;
    // The seed aggregator's schema has no key on an attempt's content: the same one may be there twice.
    await sql`insert into duplicate_attempts (vote_hash, citizen_id, law_id, choice, attempt_timestamp, reason)
              values (${COUNTED_HASH}, 'c-9000', 'LAW-1', 'non', '2026-01-01 11:00:00', 'again'),
                     (${COUNTED_HASH}, 'c-9000', 'LAW-1', 'non', '2026-01-01 11:00:00', 'again')`;
    await sql`insert into aggregation_stats (batch_size, processing_duration_ms, votes_processed) values (100, 12, 100)`;
  } else {
    await sql`insert into vote_results (law_id, oui_count, non_count) values ('LAW-1', 5, 3), ('law-old', 2, 0)`;
    await sql`insert into vote_audit (vote_hash, citizen_id, law_id, choice, "timestamp")
              values (${COUNTED_HASH}, 'c-9000', 'LAW-1', 'oui', '2026-01-01T09:00:00Z')`;
    await sql`insert into duplicate_attempts (vote_hash, citizen_id, law_id, choice, attempt_timestamp)
              values (${COUNTED_HASH}, 'c-9000', 'LAW-1', 'non', '2026-01-01T11:00:00Z')`;
    await sql`insert into aggregation_stats (batch_size, votes_counted, processing_time_ms) values (1, 1, 2.5)`;
  }
}

const TABLES = ["vote_results", "vote_audit", "duplicate_attempts", "aggregation_stats", "laws"];

/** Every row of the tables, keyed by table and primary key (or law_id / id), timestamps as instants. */
async function snapshot(sql: postgres.Sql): Promise<Map<string, Record<string, unknown>>> {
  const rows = new Map<string, Record<string, unknown>>();
  for (const table of TABLES) {
    const [{ exists }] = await sql`select to_regclass(${table}) is not null as exists`;
    if (!exists) continue;
    const key = table === "vote_results" || table === "laws" ? "law_id" : "id";
    for (const { row } of await sql.unsafe(`select to_jsonb(t) as row from ${table} t`)) {
      const normal: Record<string, unknown> = {};
      for (const [column, value] of Object.entries(row as Record<string, unknown>)) {
        normal[column] = typeof value === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value)
          ? new Date(/(Z|[+-]\d\d:\d\d)$/.test(value) ? value : `${value}Z`).toISOString()
          : value;
      }
      rows.set(`${table}:${normal[key]}`, normal);
    }
  }
  return rows;
}

async function viewColumns(sql: postgres.Sql, view: string): Promise<string[]> {
  const rows = await sql`
    select column_name from information_schema.columns where table_name = ${view} order by ordinal_position`;
  return rows.map((r) => r.column_name);
}

/** Loads the schema, adds seed-era rows, migrates, checks nothing was changed, drains a stream, checks exactly. */
async function adoptAndDrain(kind: SchemaKind | "own", load: (db: TestDatabase) => Promise<void>) {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  await load(db);
  await addSeedEraRows(db.sql, kind);
  const before = await snapshot(db.sql);
  const legacy = await results(db.sql);

  const sql = testPool(db.url);
  try {
    assert.deepEqual(await migrate(sql), MIGRATIONS.slice(kind === "own" ? 1 : 0).map((m) => m.name));
  } finally {
    await sql.end({ timeout: 1 });
  }
  const after = await snapshot(db.sql);
  for (const [key, row] of before) {
    const now = after.get(key);
    assert.ok(now, `${key} is still there`);
    for (const [column, value] of Object.entries(row)) {
      assert.deepEqual(now[column], value, `${key}: ${column} unchanged by the migration`);
    }
  }
  for (const row of (await db.sql`select oui_count, non_count, total_votes from vote_results`)) {
    assert.equal(Number(row.total_votes), Number(row.oui_count) + Number(row.non_count), "total_votes filled in");
  }

  const stream = mixedStream();
  await queue.publish(stream.bodies);
  const service = await startService(testConfig(db, queue, { BATCH_SIZE: "50", RABBITMQ_PREFETCH_COUNT: "200" }));
  try {
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === stream.bodies.length);
    const t = service.aggregator.totals;
    assert.deepEqual(
      { counted: t.counted, duplicates: t.duplicates, redelivered: t.redelivered, dead: t.deadLettered },
      stream.counts,
    );
  } finally {
    assert.equal(await service.stop(), true);
  }

  const expected = structuredClone(legacy);
  for (const [law, [oui, non]] of Object.entries(stream.expected)) {
    expected[law] = [(expected[law]?.[0] ?? 0) + oui, (expected[law]?.[1] ?? 0) + non];
  }
  assert.deepEqual(await results(db.sql), expected, "vote_results: the seed's counts plus exactly the stream's");
  const [{ bad }] = await db
    .sql`select count(*)::int as bad from vote_results where total_votes <> oui_count + non_count`;
  assert.equal(bad, 0, "total_votes = oui_count + non_count on every row");
  const [{ counted, hashes }] = await db.sql`
    select count(*)::int as counted, count(distinct vote_hash)::int as hashes from vote_audit where status = 'aggregated'`;
  assert.equal(counted, hashes, "one counted audit row per hash");
  assert.equal(counted, stream.counts.counted + 1 + (kind === "aggregation" ? 1 : 0), "the stream's and the seed's");
  const queuedHash = sha256(`voter-${QUEUED_VOTER}:LAW-${QUEUED_VOTER % 3}`);
  const queuedRows = await db.sql`select status, metadata from vote_audit where vote_hash = ${queuedHash}`;
  assert.equal(queuedRows.length, 1, "the worker's row was counted in place, not copied");
  assert.equal(queuedRows[0].status, "aggregated");
  if (kind === "system") assert.deepEqual(queuedRows[0].metadata, { worker_id: "w2" });
  const dups = await db.sql`
    select choice from duplicate_attempts where vote_hash = ${COUNTED_HASH} and citizen_id = ${`citizen-${COUNTED_VOTER}`}`;
  assert.deepEqual(dups.map((r) => r.choice), ["non"], "the attempt on a seed-era counted vote is recorded, once");
  for (const [view, columns] of Object.entries(SEED_VIEW_COLUMNS)) {
    assert.deepEqual(
      (await viewColumns(db.sql, view)).slice(0, columns.length),
      columns,
      `${view}: the seed's columns`,
    );
  }
}

for (const schema of await seedSchemas()) {
  Deno.test(`seed schema (${schema.label}): adopted in place, a mixed stream counted exactly`, async () => {
    await using role = await createTestRole();
    await adoptAndDrain(schema.kind, (db) => loadSchema(db.sql, schema, role.name));
  });
}

Deno.test("own schema (001 applied before 002 existed): adopted in place, a mixed stream counted exactly", async () => {
  await adoptAndDrain("own", async (db) => {
    const sql = testPool(db.url);
    try {
      await migrate(sql, MIGRATIONS.slice(0, 1));
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});

Deno.test("seed schema with two counted audit rows for one hash: the error names the file, the object and what to do", async () => {
  await using role = await createTestRole();
  await using db = await createTestDatabase();
  const [system] = await seedSchemas();
  await loadSchema(db.sql, system, role.name);
  const hash = sha256("twice");
  await db.sql`insert into vote_audit (vote_hash, law_id, vote, status, "timestamp")
               values (${hash}, 'L1', 'oui', 'aggregated', now()), (${hash}, 'L1', 'oui', 'aggregated', now())`;
  const sql = testPool(db.url);
  try {
    await assert.rejects(migrate(sql), (error: Error) => {
      assert.match(error.message, /^Migration sql\/002_seed_contract\.sql failed in step "vote_audit keys/);
      assert.match(error.message, /on vote_audit/);
      assert.match(error.message, new RegExp(`more than one 'aggregated' row for vote_hash ${hash}`));
      assert.match(error.message, /What to do: .*SET status = 'duplicate'.*start the service again/);
      return true;
    });
  } finally {
    await sql.end({ timeout: 1 });
  }
  const [{ applied }] = await db.sql`select to_regclass('schema_migrations') is not null as applied`;
  assert.equal(applied, false, "nothing was applied");
  const columns = await db.sql`select 1 from information_schema.columns
                               where table_name = 'vote_audit' and column_name = 'citizen_id'`;
  assert.equal(columns.length, 0, "vote_audit is as it was");
});
