import assert from "node:assert/strict";
import { migrate } from "../../../lib/database/migrations.ts";
import { recordDuplicates } from "../../../lib/database/sql/record_duplicates.ts";
import { countVotes } from "../../../lib/database/sql/count_votes.ts";
import type { Vote } from "../../../lib/vote.ts";
import { createTestDatabase, insertAuditRows, results, testPool } from "../../support/servers.ts";
import { sha256 } from "../../support/votes.ts";

const STORED = 20_000;

function vote(voter: number, choice: "oui" | "non" = voter % 2 ? "oui" : "non"): Vote {
  return {
    hash: sha256(`plan:${voter}`),
    citizenId: `c${voter}`,
    lawId: "L1",
    choice,
    timestamp: "2026-11-22T10:00:00Z",
  };
}

/** What one connection read of vote_audit, from the statistics it flushed. */
async function reads(sql: ReturnType<typeof testPool>): Promise<{ seqScans: number; indexTuples: number }> {
  await sql`select pg_stat_force_next_flush()`;
  const [row] = await sql<{ seqScans: number; indexTuples: number }[]>`
    select coalesce(t.seq_scan, 0)::int as "seqScans",
           (select coalesce(sum(i.idx_tup_read), 0)::int from pg_stat_user_indexes i where i.relid = t.relid)
             as "indexTuples"
    from pg_stat_user_tables t where t.relname = 'vote_audit'`;
  return row;
}

Deno.test("count_votes: with stale statistics a batch probes vote_audit's indexes, it never reads every row", async () => {
  await using db = await createTestDatabase();
  // One connection, so that the statistics read are the ones its statements flushed.
  const sql = testPool(db.url, 1);
  try {
    await migrate(sql);
    // Many rows the planner knows nothing of (no ANALYZE, autovacuum off): the validation worker's
    // 'validated' rows for voters 0..STORED, and votes counted before for voters STORED..2×STORED.
    await sql`alter table vote_audit set (autovacuum_enabled = false)`;
    const worker = Array.from({ length: STORED }, (_, i) => vote(i));
    const counted = Array.from({ length: STORED }, (_, i) => vote(STORED + i));
    await insertAuditRows(sql, worker, "validated");
    await insertAuditRows(sql, counted, "aggregated");

    // A batch of 300: 100 with a worker's row, 100 new, 50 redeliveries and 50 duplicate attempts of counted votes.
    const batch = [
      ...worker.slice(0, 100),
      ...Array.from({ length: 100 }, (_, i) => vote(2 * STORED + i)),
      ...counted.slice(0, 50),
      ...counted.slice(50, 100).map((v) => ({ ...v, choice: v.choice === "oui" ? "non" as const : "oui" as const })),
    ];
    const before = await reads(sql);
    const outcome = await countVotes(sql, batch, { batchAgeMs: 1, instance: "plan" });
    const recorded = await recordDuplicates(sql, outcome.skipped.map((ord) => batch[ord - 1]));
    const after = await reads(sql);

    assert.equal(outcome.skipped.length, 100);
    assert.equal(recorded, 50);
    assert.deepEqual(await results(db.sql), { L1: [100, 100] });
    const [{ adopted }] = await db.sql`
      select count(*)::int as adopted from vote_audit where status = 'aggregated' and batch_id is not null
        and vote_hash = any(${db.sql.array(worker.slice(0, 100).map((v) => v.hash))})`;
    assert.equal(adopted, 100, "the worker's rows are the ones counted");
    assert.equal(after.seqScans - before.seqScans, 0, "no sequential scan of vote_audit");
    // A probe per vote and index (a few tuples each), against 40,000 for one scan of either partial index.
    assert.ok(
      after.indexTuples - before.indexTuples < 10 * batch.length,
      `${after.indexTuples - before.indexTuples} index tuples read for a batch of ${batch.length}`,
    );
  } finally {
    await sql.end({ timeout: 1 });
  }
});
