/**
 * Connection poolers (PgBouncer): whether the pool may use named prepared statements. In
 * `pool_mode=transaction` each transaction may run on another server connection, where a statement
 * prepared on the first does not exist; PgBouncer (before 1.21's `max_prepared_statements`) does not
 * carry them over. `POSTGRES_PREPARE` decides: `true`, `false`, or `auto` (the default), which asks
 * the server which port it listens on: a server port other than the one in the URL means something
 * stands in between (a pooler, or a port mapping), and prepared statements are then left off (the
 * cost of being wrong that way is a little CPU; the other way, failed commits).
 *
 * It does not own the pool ({@link ./pool.ts} opens it with the answer), nor `LISTEN`, which
 * needs a session and so a direct connection (docs/scaling.md).
 *
 * @example
 * ```ts
 * import { usePreparedStatements } from "./pooler.ts";
 * const prepare = await usePreparedStatements(config); // false behind PgBouncer on 6432
 * ```
 *
 * @module
 */

import postgres from "postgres";
import type { Config } from "../config/config.ts";
import { sslOption } from "./pool.ts";
import { getLogger } from "../log.ts";

const log = getLogger("database");

/** The parts of the configuration the decision depends on. */
export type PoolerConfig =
  & Pick<Config, "databaseUrl" | "postgresPrepare" | "postgresSslMode" | "postgresSslRootCert">
  & Partial<Pick<Config, "connectTimeoutMs">>;

/**
 * Whether the pool should use named prepared statements: `POSTGRES_PREPARE`, or for `auto` whether the
 * server listens on the port the URL names (one connection, one query).
 *
 * @throws the connection's error when the server cannot be asked (start-up retries it, `../startup.ts`)
 */
export async function usePreparedStatements(config: PoolerConfig): Promise<boolean> {
  if (config.postgresPrepare !== "auto") return config.postgresPrepare === "true";
  const url = new URL(config.databaseUrl);
  const urlPort = Number(url.port || 5432);
  const sql = postgres(config.databaseUrl, {
    max: 1,
    connect_timeout: (config.connectTimeoutMs ?? 10_000) / 1000,
    prepare: false,
    ssl: sslOption(config.postgresSslMode, config.postgresSslRootCert, url.hostname),
    onnotice: () => {},
    connection: { application_name: "vote-aggregator" },
  });
  try {
    const [{ port }] = await sql<{ port: string }[]>`select current_setting('port') as port`;
    if (Number(port) === urlPort) return true;
    log.info(
      "PostgreSQL listens on port {port} but the URL names {urlPort}: a pooler (PgBouncer) or a port mapping is " +
        "in between, so prepared statements are off (set POSTGRES_PREPARE=true to force them)",
      { port, urlPort },
    );
    return false;
  } finally {
    await sql.end({ timeout: 1 });
  }
}
