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
import { parseDatabaseUrl } from "../config/url.ts";
import { DatabaseHosts } from "./hosts.ts";
import { getLogger } from "../log.ts";
import { guardTypeFetch } from "./pg_type_fetch.ts";
import { backoffDelay, type RetryOptions } from "../retry.ts";

/** The pool: a postgres.js `sql` tag. */
export type Sql = postgres.Sql;

const log = getLogger("database");

/** postgres.js's wait before a connection's next attempt after failures: 50 ms doubling to 1 s, half random. */
export const POOL_RECONNECT_BACKOFF: RetryOptions = { minDelayMs: 50, maxDelayMs: 1000, jitter: 0.5 };

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
  const server = serverOptions(config.databaseUrl, config.connectTimeoutMs);
  return postgres(server.url, {
    ...extra,
    ...server.options,
    max: config.postgresMaxConnections,
    // Covers TCP, TLS and the start-up handshake (until the server is ready for a query).
    connect_timeout: (config.connectTimeoutMs ?? 10_000) / 1000,
    // postgres.js waits before a connection's next attempt, by failures counted across the pool: 3^n/100 s,
    // up to 20 s by default, so after a long outage the first query could wait that long after the server
    // came back. The service's own loops already pace their queries (the outage loop, the probe, the
    // listener): postgres.js only needs to keep a failing server from a burst, so its wait stays under 1 s.
    backoff: (failures: number) => backoffDelay(failures, POOL_RECONNECT_BACKOFF) / 1000,
    ssl: sslOption(config.postgresSslMode, config.postgresSslRootCert, server.hostname),
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
  const server = serverOptions(config.databaseUrl, config.connectTimeoutMs);
  const url = new URL(server.url);
  const name = decodeURIComponent(url.pathname.slice(1)) || decodeURIComponent(url.username) || "postgres";
  const probe = async (target: URL, query: (sql: Sql) => Promise<unknown>) => {
    guardTypeFetch(); // this pool's connection starts with the catalog query too
    const sql = postgres(target.toString(), {
      ...server.options,
      max: 1,
      connect_timeout: (config.connectTimeoutMs ?? 10_000) / 1000,
      ssl: sslOption(config.postgresSslMode, config.postgresSslRootCert, server.hostname),
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

/**
 * What postgres.js is given for `databaseUrl`: the URL with its first host, and `target_session_attrs`
 * (`read-write` unless the URL says otherwise) so that only a server that takes writes is kept. For
 * several hosts (libpq's `h1:p1,h2:p2`, `../config/url.ts`) the connections are opened by
 * {@link DatabaseHosts} (`socket`: the next host at once, a backoff after a full round); the host list is
 * given too, as it keeps a failed attempt inside postgres.js, which tries again (through `socket`)
 * rather than failing the query at each host.
 *
 * @param connectTimeoutMs `CONNECT_TIMEOUT_SECONDS`: a connection open that long counts as a success
 */
export function serverOptions(databaseUrl: string, connectTimeoutMs = 10_000): {
  url: string;
  /** The host a connection goes to, for `verify-full`'s certificate check: with several, the one tried now. */
  hostname: () => string;
  options: {
    host?: string;
    port?: number;
    socket?: DatabaseHosts["socket"];
    target_session_attrs?: "primary";
  };
} {
  const address = parseDatabaseUrl(databaseUrl);
  if (address === undefined) return { url: databaseUrl, hostname: () => "", options: {} };
  const { url, hosts } = address;
  const attrs = url.searchParams.get("target_session_attrs") ?? (hosts.length > 1 ? "read-write" : "any");
  if (url.searchParams.has("target_session_attrs")) url.searchParams.delete("target_session_attrs");
  // postgres.js 3.4.9 tells `read-write` by `default_transaction_read_only` alone, which a hot standby of
  // PostgreSQL 14+ reports as off (it is `transaction_read_only` that is on there): it would keep a standby.
  // `primary` (not in recovery, `in_hot_standby`) is what skips one.
  const target = attrs === "read-write" || attrs === "primary" ? { target_session_attrs: "primary" as const } : {};
  const rounds = hosts.length > 1 ? new DatabaseHosts(hosts, connectTimeoutMs + 1000) : undefined;
  return {
    url: hosts.length > 1 || attrs !== "any" ? url.toString() : databaseUrl,
    hostname: rounds ? () => rounds.current.host : () => url.hostname,
    // postgres.js takes lists here (src/index.js, parseOptions) though its types say one host and one port.
    options: rounds
      ? {
        host: hosts.map((h) => h.host) as unknown as string,
        port: hosts.map((h) => h.port) as unknown as number,
        socket: rounds!.socket,
        ...target,
      }
      : target,
  };
}

/**
 * True for a write refused because the server is read-only (SQLSTATE 25006: a hot standby, a demoted
 * primary, `default_transaction_read_only`): the database is unavailable for writing, the data is fine.
 */
export function isReadOnly(error: unknown): boolean {
  return error instanceof postgres.PostgresError && error.code === "25006";
}

/** True for errors that mean the data is refused (SQLSTATE classes 22 and 23), not that the database is unwell. */
export function isDataError(error: unknown): boolean {
  return error instanceof postgres.PostgresError && /^2[23]/.test(error.code);
}

/** postgres.js's `ssl` option for `mode` (the pool, the probes). */
export function sslOption(
  mode: Config["postgresSslMode"],
  caFile: string | undefined,
  host: string | (() => string),
) {
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
        // certificate against "localhost": check it against the host the URL names instead (of several,
        // the one being connected to).
        checkServerIdentity: (_: string, cert: Parameters<typeof checkServerIdentity>[1]) =>
          checkServerIdentity((typeof host === "function" ? host() : host).replace(/^\[(.*)\]$/, "$1"), cert),
      };
  }
}
