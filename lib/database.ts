/**
 * Database: the postgres.js pool and the numbered migrations in `sql/`,
 * applied at start under an advisory lock so several instances can start at once.
 *
 * The migrations are imported as text, so they are part of the module graph and
 * embedded in a `deno compile` binary: no file is read at run time.
 *
 * @example
 * ```ts
 * import { connectDatabase, migrate } from "./database.ts";
 * const sql = connectDatabase({ databaseUrl: "postgres://postgres@127.0.0.1/votes", postgresMaxConnections: 10,
 *   postgresSslMode: "disable", postgresSslRootCert: undefined });
 * await migrate(sql); // [] when the schema is current
 * ```
 *
 * @module
 */

import postgres from "postgres";
import type { Config } from "./config.ts";
import schema001 from "../sql/001_schema.sql" with { type: "text" };

/** The pool: a postgres.js `sql` tag. */
export type Sql = postgres.Sql;

/** One migration: its version (the file's number) and SQL text. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The migrations in order. A new `sql/NNN_name.sql` file must be listed here (a test checks). */
export const MIGRATIONS: readonly Migration[] = [
  { version: 1, name: "001_schema.sql", sql: schema001 },
];

// Arbitrary but fixed: every instance of this service locks the same key while migrating.
const MIGRATION_LOCK_KEY = 7_411_202_611;

/**
 * Opens the pool (lazily: connections open on first use, up to the maximum).
 *
 * @param config the database part of the configuration
 */
export function connectDatabase(
  config: Pick<
    Config,
    "databaseUrl" | "postgresMaxConnections" | "postgresSslMode" | "postgresSslRootCert"
  >,
): Sql {
  return postgres(config.databaseUrl, {
    max: config.postgresMaxConnections,
    connect_timeout: 10,
    ssl: sslOption(config.postgresSslMode, config.postgresSslRootCert),
    onnotice: () => {},
    connection: { application_name: "vote-aggregator" },
  });
}

/**
 * Opens `count` connections now, so that the first batches do not pay for them
 * and a wrong address or password fails the start instead of the first commit.
 */
export async function warmUp(sql: Sql, count: number): Promise<void> {
  await Promise.all(
    Array.from({ length: Math.max(1, count) }, () => sql`select 1`),
  );
}

/**
 * Applies the migrations not yet applied, in order, in one transaction holding
 * an advisory lock: an instance that starts while another migrates waits for it.
 *
 * @returns the names of the migrations applied now
 */
export async function migrate(
  sql: Sql,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<string[]> {
  return await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`;
    await tx`
      create table if not exists schema_migrations (
        version    integer primary key,
        name       text not null,
        applied_at timestamptz not null default now()
      )`;
    const rows = await tx<{ version: number }[]>`select version from schema_migrations`;
    const applied = new Set(rows.map((r) => r.version));
    const names: string[] = [];
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue;
      await tx.unsafe(migration.sql);
      await tx`insert into schema_migrations (version, name) values (${migration.version}, ${migration.name})`;
      names.push(migration.name);
    }
    return names;
  });
}

/** True for errors that mean the data is refused (SQLSTATE classes 22 and 23), not that the database is unwell. */
export function isDataError(error: unknown): boolean {
  return error instanceof postgres.PostgresError && /^2[23]/.test(error.code);
}

function sslOption(mode: Config["postgresSslMode"], caFile: string | undefined) {
  switch (mode) {
    case "disable":
      return false;
    case "prefer":
    case "require":
      return mode;
    case "verify-full":
      return caFile ? { ca: Deno.readTextFileSync(caFile), rejectUnauthorized: true } : "verify-full";
  }
}
