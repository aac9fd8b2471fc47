/**
 * Migrations: the numbered files in `sql/`, applied at start in one transaction under an advisory
 * lock, so that several instances can start at once; a failure names the file and step and leaves
 * nothing applied. The lock is transaction-level (`pg_advisory_xact_lock`), so it holds behind
 * PgBouncer in `pool_mode=transaction` too, where a session-level one would go back to the pool
 * with the connection. It does not open connections ({@link ./pool.ts} does).
 *
 * The migrations are imported as text, so they are part of the module graph and
 * embedded in a `deno compile` binary: no file is read at run time.
 *
 * @example
 * ```ts
 * import { connectDatabase } from "./pool.ts";
 * import { migrate } from "./migrations.ts";
 * const sql = connectDatabase({ databaseUrl: "postgres://postgres@127.0.0.1/votes", postgresMaxConnections: 10,
 *   postgresSslMode: "disable", postgresSslRootCert: undefined });
 * await migrate(sql); // [] when the schema is current
 * ```
 *
 * @module
 */

import postgres from "postgres";
import type { Sql } from "./pool.ts";
import schema001 from "../../sql/001_schema.sql" with { type: "text" };
import seedContract002 from "../../sql/002_seed_contract.sql" with { type: "text" };
import resultsVersion003 from "../../sql/003_results_version.sql" with { type: "text" };
import batchLedger004 from "../../sql/004_batch_ledger.sql" with { type: "text" };
import hashCheck005 from "../../sql/005_hash_check.sql" with { type: "text" };
import brinAutosummarizeOff006 from "../../sql/006_brin_autosummarize_off.sql" with { type: "text" };

/** One migration: its version (the file's number) and SQL text. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The migrations in order. A new `sql/NNN_name.sql` file must be listed here (a test checks). */
export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: "001_schema.sql", sql: schema001 },
  { version: 2, name: "002_seed_contract.sql", sql: seedContract002 },
  { version: 3, name: "003_results_version.sql", sql: resultsVersion003 },
  { version: 4, name: "004_batch_ledger.sql", sql: batchLedger004 },
  { version: 5, name: "005_hash_check.sql", sql: hashCheck005 },
  { version: 6, name: "006_brin_autosummarize_off.sql", sql: brinAutosummarizeOff006 },
];

// Arbitrary but fixed: every instance of this service locks the same key while migrating.
export const MIGRATION_LOCK_KEY = 7_411_202_611;

/**
 * Applies the migrations not yet applied, in order, in one transaction holding
 * an advisory lock: an instance that starts while another migrates waits for it.
 * When none is pending it only reads `schema_migrations`, so the service's
 * least-privilege role (`sql/role_vote_aggregator.sql`) can start it.
 *
 * @returns the names of the migrations applied now
 * @throws when migrations are pending and the role may not apply them; the message says what to do
 */
export async function migrate(
  sql: Sql,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<string[]> {
  if ((await pending(sql, migrations)).length === 0) return [];
  try {
    return await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`;
      await tx`
        create table if not exists schema_migrations (
          version    integer primary key,
          name       text not null,
          applied_at timestamptz not null default now()
        )`;
      const names: string[] = [];
      // Read again under the lock: another instance may have applied them meanwhile.
      for (const migration of await pending(tx, migrations)) {
        await applyMigration(tx, migration);
        await tx`insert into schema_migrations (version, name) values (${migration.version}, ${migration.name})`;
        names.push(migration.name);
      }
      return names;
    });
  } catch (error) {
    if (error instanceof MigrationError) throw error;
    if (error instanceof postgres.PostgresError && error.code === "42501") {
      throw new Error(
        `Migrations are pending and this role may not apply them (${error.message}): ` +
          "start the service once as the schema's owner (DATABASE_URL or POSTGRES_USER), then as its own role",
        { cause: error },
      );
    }
    throw error;
  }
}

/** A migration failed: the message names the file, the step and object, and what to do. */
export class MigrationError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationError";
  }
}

/**
 * Runs one migration, step by step: a migration file is cut at its `-- step: <what>` lines, so that
 * a failure names the step it failed in. Every step runs in the caller's transaction: a failure
 * leaves nothing applied.
 */
async function applyMigration(tx: postgres.TransactionSql, migration: Migration): Promise<void> {
  for (const step of migrationSteps(migration.sql)) {
    try {
      await tx.unsafe(step.sql);
    } catch (error) {
      if (!(error instanceof postgres.PostgresError) || error.code === "42501") throw error;
      const e = error as postgres.PostgresError & {
        table_name?: string;
        constraint_name?: string;
        column_name?: string;
      };
      const object = [e.table_name, e.column_name].filter(Boolean).join(".") || e.constraint_name;
      const todo = e.hint ??
        "fix what the error names (or restore the database from its backup), then start the service again; " +
          "docs/seed-system.md says what each migration changes";
      throw new MigrationError(
        `Migration sql/${migration.name} failed in step "${step.name}"${object ? ` on ${object}` : ""}: ` +
          `${e.message}${e.detail ? ` (${e.detail})` : ""}. Nothing was changed (the migrations run in one ` +
          `transaction). What to do: ${todo}`,
        { cause: error },
      );
    }
  }
}

/** A migration's `-- step: <what>` sections; the text before the first one is the step "start". */
export function migrationSteps(text: string): { name: string; sql: string }[] {
  const steps: { name: string; sql: string }[] = [];
  let name = "start";
  let start = 0;
  for (const match of text.matchAll(/^-- step: (.+)$/gm)) {
    steps.push({ name, sql: text.slice(start, match.index) });
    name = match[1].trim();
    start = match.index;
  }
  steps.push({ name, sql: text.slice(start) });
  // A section of comments alone is not a statement.
  return steps.filter((step) => step.sql.replace(/--.*$/gm, "").trim() !== "");
}

/** The migrations `sql`'s database has not applied (all of them when it has no `schema_migrations`). */
export async function pending(
  sql: postgres.Sql | postgres.TransactionSql,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<readonly Migration[]> {
  const [{ exists }] = await sql<{ exists: boolean }[]>`
    select to_regclass('schema_migrations') is not null as exists`;
  if (!exists) return migrations;
  const rows = await sql<{ version: number }[]>`select version from schema_migrations`;
  const applied = new Set(rows.map((r) => r.version));
  return migrations.filter((m) => !applied.has(m.version));
}
