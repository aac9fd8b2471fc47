import assert from "node:assert/strict";
import { isDataError } from "../../lib/database/pool.ts";
import { migrate, MIGRATIONS } from "../../lib/database/migrations.ts";
import { VoteWriter } from "../../lib/database/writer.ts";
import { unprotectedReplication } from "../../lib/database/standbys.ts";
import { createTestDatabase, testPool } from "../support/servers.ts";

Deno.test("migrations: every sql/NNN_*.sql file is listed, in order", async () => {
  const files: string[] = [];
  for await (const entry of Deno.readDir(new URL("../../sql/", import.meta.url))) {
    if (/^\d{3}_.*\.sql$/.test(entry.name)) files.push(entry.name);
  }
  assert.deepEqual(MIGRATIONS.map((m) => m.name), files.sort());
  assert.deepEqual(MIGRATIONS.map((m) => m.version), files.map((f) => Number(f.slice(0, 3))));
});

Deno.test("migrations: several instances starting at once apply each migration exactly once", async () => {
  await using db = await createTestDatabase();
  const pools = Array.from({ length: 4 }, () => testPool(db.url));
  try {
    const applied = await Promise.all(pools.map((sql) => migrate(sql)));
    assert.deepEqual(applied.flat(), MIGRATIONS.map((m) => m.name), "one instance applied them, the others none");
    assert.deepEqual(await migrate(pools[0]), [], "a later start applies nothing");
    const rows = await db.sql`select version from schema_migrations order by version`;
    assert.deepEqual(rows.map((r) => r.version), MIGRATIONS.map((m) => m.version));
  } finally {
    await Promise.all(pools.map((sql) => sql.end({ timeout: 1 })));
  }
});

Deno.test("schema: the seed's tables and views answer the seed's queries", async () => {
  await using db = await createTestDatabase();
  const sql = testPool(db.url);
  try {
    await migrate(sql);
    await db.sql`insert into laws (law_id, title) values ('L1', 'Loi 1')`;
    await db.sql`insert into vote_results (law_id, oui_count, non_count) values ('L1', 3, 1)`;
    const [stats] = await db.sql`
      select law_id, title, total_votes::int, oui_percentage::float8, non_percentage::float8 from vote_statistics`;
    assert.deepEqual({ ...stats }, {
      law_id: "L1",
      title: "Loi 1",
      total_votes: 4,
      oui_percentage: 75,
      non_percentage: 25,
    });
    const [before] = await db.sql`select updated_at from vote_results`;
    await db.sql`update vote_results set oui_count = oui_count + 1`;
    const [after] = await db.sql`select updated_at from vote_results`;
    assert.ok(after.updated_at > before.updated_at, "the trigger touches updated_at");
    // The checks refuse what the service must never write.
    await assert.rejects(db.sql`update vote_results set non_count = -1`, (e) => isDataError(e));
    await assert.rejects(
      db.sql`insert into vote_audit (vote_hash, law_id, choice) values (${"a".repeat(64)}, 'L1', 'maybe')`,
      (e) => isDataError(e),
    );
    const indexes = await db.sql`select indexname from pg_indexes where tablename = 'vote_audit' order by 1`;
    // Partial indexes: a counted vote's row enters vote_audit_counted_key only, a worker's 'validated' row the other.
    assert.deepEqual(
      indexes.map((r) => r.indexname),
      ["vote_audit_batch", "vote_audit_counted_key", "vote_audit_validated_hash"],
      "one B-tree index per audit insert (and the batch's BRIN summary)",
    );
  } finally {
    await sql.end({ timeout: 1 });
  }
});

Deno.test("role: vote_aggregator can run the service and nothing more", async () => {
  await using db = await createTestDatabase();
  const owner = testPool(db.url);
  const url = new URL(db.url);
  url.username = "vote_aggregator";
  const role = testPool(url.toString());
  try {
    const script = await Deno.readTextFile(new URL("../../sql/role_vote_aggregator.sql", import.meta.url));
    // The role alone, before the tables exist: the script up to its first statement that is not the role's
    // (a line starting with REVOKE; the header's comments mention REVOKE too).
    await owner.unsafe(script.slice(0, script.search(/^REVOKE/m)));
    await assert.rejects(
      migrate(role),
      /start the service once as the schema's owner/,
      "pending migrations need the owner",
    );
    await migrate(owner);
    await owner.unsafe(script);
    assert.deepEqual(await migrate(role), [], "a current schema starts under the role");

    const writer = new VoteWriter(role, { maxRetryAttempts: 1 });
    const v = (n: number, choice: "oui" | "non") => ({
      hash: n.toString(16).padStart(64, "0"),
      citizenId: null,
      lawId: "L1",
      choice,
      timestamp: null,
    });
    const result = await writer.commit([v(1, "oui"), v(2, "non"), v(1, "non"), v(2, "non")]);
    assert.deepEqual([result.counted, result.duplicates, result.redelivered], [2, 1, 1]);
    const ledger = await role`select seq, votes from vote_ledger`;
    assert.deepEqual(ledger.map((r) => [Number(r.seq), r.votes]), [[1, 2]], "the role appends to the ledger");
    // POSTGRES_MIN_STANDBYS reads the standbys' positions through 007's function, the start's warning the settings.
    assert.deepEqual([...await role`select standby, flushed from standby_flush_lsns()`], []);
    assert.equal(await unprotectedReplication(role, 0), undefined);

    for (
      const forbidden of [
        role`delete from vote_audit`,
        role`update vote_audit set choice = 'non'`,
        role`truncate vote_results`,
        role`select * from laws`,
        role`create table evil (id int)`,
        role`select * from aggregation_stats`,
        role`delete from duplicate_attempts`,
        role`delete from vote_ledger`,
        role`update vote_ledger set votes = 1`,
        role`truncate vote_ledger`,
        role`delete from ledger_head`,
        role`create or replace function standby_flush_lsns() returns table (standby text, flushed pg_lsn)
             language sql as 'select null::text, null::pg_lsn'`,
      ]
    ) {
      await assert.rejects(forbidden, (e: { code?: string }) => e.code === "42501");
    }
  } finally {
    await role.end({ timeout: 1 });
    await owner.end({ timeout: 1 });
  }
});

Deno.test("schema: vote_audit's hash check (005, without the regex's counted repetition) refuses what 001's did", async () => {
  await using db = await createTestDatabase();
  const sql = testPool(db.url);
  try {
    await migrate(sql);
    const [{ def }] = await db.sql`
      select pg_get_constraintdef(oid) as def from pg_constraint where conname = 'vote_audit_vote_hash_check'`;
    assert.doesNotMatch(def, /\{64\}/, "the cheap form is in place");
    const insert = (hash: string) =>
      db.sql`insert into vote_audit (vote_hash, law_id, choice, status) values (${hash}, 'L1', 'oui', 'aggregated')`;
    const good = "0123456789abcdef".repeat(4);
    await insert(good);
    for (const bad of [good.toUpperCase(), good.slice(1), `${good.slice(1)}g`, `${good.slice(1)}\n`, ""]) {
      await assert.rejects(
        insert(bad),
        (e: { code?: string }) => e.code === "23514",
        `refused: ${JSON.stringify(bad)}`,
      );
    }
  } finally {
    await sql.end({ timeout: 1 });
  }
});
