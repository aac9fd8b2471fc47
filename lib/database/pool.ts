/**
 * Database: the postgres.js pool (TLS, timeouts, session settings), the database's creation on a
 * fresh server, and telling a refused value from an unwell database. The schema is
 * {@link ./migrations.ts}'s; the statements are in `lib/database/sql/`. Whether to use named prepared
 * statements (not behind PgBouncer in transaction mode) is {@link ./pooler.ts}'s decision.
 *
 * @example
 * ```ts
 * import { connectDatabase, ensureDatabase } from "./pool.ts";
 * import { migrate } from "./migrations.ts";
 * await ensureDatabase({ databaseUrl: "postgres://postgres@127.0.0.1/votes", postgresSslMode: "disable",
 *   postgresSslRootCert: undefined }); // creates it when missing
 * const sql = connectDatabase({ databaseUrl: "postgres://postgres@127.0.0.1/votes", postgresMaxConnections: 10,
 *   postgresSslMode: "disable", postgresSslRootCert: undefined });
 * await migrate(sql); // [] when the schema is current
 * ```
 *
 * @module
 */

import { checkServerIdentity } from "node:tls";
import postgres from "postgres";
import type { Config } from "../config/config.ts";
import { getLogger } from "../log.ts";
import { guardTypeFetch } from "./pg_type_fetch.ts";

/** The pool: a postgres.js `sql` tag. */
export type Sql = postgres.Sql;

const log = getLogger("database");

/** Options of {@link connectDatabase}. */
export interface ConnectOptions {
  /** Named prepared statements; off behind a transaction pooler (see `pooler.ts`). @default true */
  prepare?: boolean;
  /** What `pg_stat_activity` shows for its connections. @default "vote-aggregator" */
  applicationName?: string;
  /** More postgres.js options (the results listener's hooks). */
  extra?: postgres.Options<Record<string, postgres.PostgresType>>;
  /** Every transaction read-only (`default_transaction_read_only`): a results-only instance's. @default false */
  readOnly?: boolean;
}

/**
 * Opens the pool (lazily: connections open on first use, up to the maximum).
 *
 * @param config the database part of the configuration
 * @param options see {@link ConnectOptions}
 */
export function connectDatabase(
  config:
    & Pick<
      Config,
      "databaseUrl" | "postgresMaxConnections" | "postgresSslMode" | "postgresSslRootCert"
    >
    & Partial<Pick<Config, "connectTimeoutMs">>,
  { prepare = true, applicationName = "vote-aggregator", extra = {}, readOnly = false }: ConnectOptions = {},
): Sql {
  guardTypeFetch(); // a failed type-catalog query must not end the process (see pg_type_fetch.ts)
  return postgres(config.databaseUrl, {
    ...extra,
    max: config.postgresMaxConnections,
    // Covers TCP, TLS and the start-up handshake (until the server is ready for a query).
    connect_timeout: (config.connectTimeoutMs ?? 10_000) / 1000,
    ssl: sslOption(config.postgresSslMode, config.postgresSslRootCert, new URL(config.databaseUrl).hostname),
    onnotice: () => {},
    // Named prepared statements, or unnamed ones behind a transaction pooler (./pooler.ts).
    prepare,
    // Plan each statement with its real arguments and the tables' current size: a generic plan cached
    // while vote_audit was small kept seq-scanning it in the duplicate lookup, O(rows) per batch. Only
    // named statements are ever planned generically; an unnamed one is planned at each execution with
    // its arguments, so without them the setting is not needed — and PgBouncer refuses it at startup.
    connection: {
      application_name: applicationName,
      ...(prepare ? { plan_cache_mode: "force_custom_plan" } : {}),
      ...(readOnly ? { default_transaction_read_only: true } : {}),
    },
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
 * Creates the configured database when it does not exist yet, connecting to the `postgres` maintenance
 * database on the same server as the same role. Concurrent starts are fine: one creates it.
 *
 * @returns true when it created the database
 * @throws the connection's error when the server cannot be reached (refused, timed out)
 * @throws when it is missing and this role may not create it; the message gives the `createdb` command
 */
export async function ensureDatabase(
  config:
    & Pick<Config, "databaseUrl" | "postgresSslMode" | "postgresSslRootCert">
    & Partial<Pick<Config, "connectTimeoutMs">>,
): Promise<boolean> {
  const url = new URL(config.databaseUrl);
  const name = decodeURIComponent(url.pathname.slice(1)) || decodeURIComponent(url.username) || "postgres";
  const probe = async (target: URL, query: (sql: Sql) => Promise<unknown>) => {
    guardTypeFetch(); // this pool's connection starts with the catalog query too
    const sql = postgres(target.toString(), {
      max: 1,
      connect_timeout: (config.connectTimeoutMs ?? 10_000) / 1000,
      ssl: sslOption(config.postgresSslMode, config.postgresSslRootCert, target.hostname),
      onnotice: () => {},
      prepare: false,
      connection: { application_name: "vote-aggregator" },
    });
    try {
      await query(sql);
    } finally {
      await sql.end({ timeout: 1 });
    }
  };
  try {
    await probe(url, (sql) => sql`select 1`);
    return false;
  } catch (error) {
    // 3D000: the database does not exist. A refusal (wrong password) is for the caller to report; the server
    // unreachable or silent is thrown, for the caller to retry.
    if (!(error instanceof postgres.PostgresError)) throw error;
    if (error.code !== "3D000") return false;
  }
  const maintenance = new URL(url);
  maintenance.pathname = "/postgres";
  try {
    await probe(maintenance, (sql) => sql.unsafe(`create database ${quoteIdentifier(name)}`));
    log.info("Created database {name}", { name });
    return true;
  } catch (error) {
    // 42P04: another instance created it meanwhile.
    if (error instanceof postgres.PostgresError && error.code === "42P04") return false;
    const user = decodeURIComponent(url.username) || "postgres";
    const port = url.port || "5432";
    throw new Error(
      `Database "${name}" does not exist and cannot be created as role "${user}" (${(error as Error).message}): ` +
        `run \`createdb -h ${url.hostname} -p ${port} -O ${user} ${name}\` as a role that may create databases, then start again`,
      { cause: error },
    );
  }
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** True for errors that mean the data is refused (SQLSTATE classes 22 and 23), not that the database is unwell. */
export function isDataError(error: unknown): boolean {
  return error instanceof postgres.PostgresError && /^2[23]/.test(error.code);
}

/** postgres.js's `ssl` option for `mode` (the pool, the probes). */
export function sslOption(mode: Config["postgresSslMode"], caFile: string | undefined, host: string) {
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
