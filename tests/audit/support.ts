/**
 * Fixtures for the audit tests: a migrated test database with a few batches
 * counted by the real writer, and a way past vote_ledger's append-only
 * triggers for the tampering cases (as a superuser could).
 *
 * @module
 */

import type postgres from "postgres";
import { migrate } from "../../lib/database/migrations.ts";
import type { Vote } from "../../lib/vote.ts";
import { VoteWriter } from "../../lib/database/writer.ts";
import { createTestDatabase, type TestDatabase, testPool } from "../support/servers.ts";
import { sha256 } from "../support/votes.ts";

/** A test vote `n` of law `lawId`. */
export function vote(n: number, lawId: string, choice: "oui" | "non"): Vote {
  return { hash: sha256(`audit-${n}`), citizenId: `c-${n}`, lawId, choice, timestamp: "2026-11-22T10:00:00Z" };
}

/** A migrated database holding `batches` batches of `perBatch` votes over laws L1..L3, counted by the writer. */
export async function countedDatabase(batches = 5, perBatch = 20): Promise<TestDatabase> {
  const db = await createTestDatabase();
  const pool = testPool(db.url);
  try {
    await migrate(pool);
    const writer = new VoteWriter(pool, { maxRetryAttempts: 1, instance: "audit-test" });
    for (let b = 0; b < batches; b++) {
      const votes = Array.from({ length: perBatch }, (_, i) => {
        const n = b * perBatch + i;
        return vote(n, `L${(n % 3) + 1}`, n % 4 === 0 ? "non" : "oui");
      });
      await writer.commit(votes);
    }
  } finally {
    await pool.end({ timeout: 1 });
  }
  return db;
}

/** Runs `fn` with the database's triggers off for this session (vote_ledger's append-only ones). */
export async function bypassingTriggers(sql: postgres.Sql, fn: (tx: postgres.TransactionSql) => Promise<unknown>) {
  await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await fn(tx);
  });
}
