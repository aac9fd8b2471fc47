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

import { checkServerIdentity } from "node:tls";
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
    ssl: sslOption(config.postgresSslMode, config.postgresSslRootCert, new URL(config.databaseUrl).hostname),
    onnotice: () => {},
    // Plan each statement with its real arguments and the tables' current size: a generic plan cached
    // while vote_audit was small kept seq-scanning it in the duplicate lookup, O(rows) per batch.
    connection: { application_name: "vote-aggregator", plan_cache_mode: "force_custom_plan" },
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
        await tx.unsafe(migration.sql);
        await tx`insert into schema_migrations (version, name) values (${migration.version}, ${migration.name})`;
        names.push(migration.name);
      }
      return names;
    });
  } catch (error) {
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

async function pending(sql: postgres.Sql | postgres.TransactionSql, migrations: readonly Migration[]) {
  const [{ exists }] = await sql<{ exists: boolean }[]>`
    select to_regclass('schema_migrations') is not null as exists`;
  if (!exists) return migrations;
  const rows = await sql<{ version: number }[]>`select version from schema_migrations`;
  const applied = new Set(rows.map((r) => r.version));
  return migrations.filter((m) => !applied.has(m.version));
}

/** True for errors that mean the data is refused (SQLSTATE classes 22 and 23), not that the database is unwell. */
export function isDataError(error: unknown): boolean {
  return error instanceof postgres.PostgresError && /^2[23]/.test(error.code);
}

function sslOption(mode: Config["postgresSslMode"], caFile: string | undefined, host: string) {
  switch (mode) {
    case "disable":
      return false;
    case "prefer":
    case "require":
      return mode;
    case "verify-full":
      return {
        ...(caFile ? { ca: Deno.readTextFileSync(caFile) } : {}),
        rejectUnauthorized: true,
        // postgres.js passes no server name for an IP address, and node:tls then checks the
        // certificate against "localhost": check it against the host the URL names instead.
        checkServerIdentity: (_: string, cert: Parameters<typeof checkServerIdentity>[1]) =>
          checkServerIdentity(host.replace(/^\[(.*)\]$/, "$1"), cert),
      };
  }
}
