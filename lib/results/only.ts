/**
 * A results-only instance (`vote-aggregator results`): the results routes, the
 * page, `/healthz`, `/readyz` and `/metrics`, and nothing of the counting. It
 * reads `RESULTS_DATABASE_URL` (else `DATABASE_URL`) in read-only transactions,
 * so that a read-only role (sql/role_results_reader.sql) or a streaming standby
 * is enough: it never consumes, never writes, never migrates, and needs no
 * broker. It runs where the audience is, as many as it needs, away from the
 * counting instances (which may turn their own results off, `RESULTS_ENABLED=false`).
 *
 * At start it checks that the schema it reads is there and current (the counting
 * instances migrate it), and says what to do when it is not. A standby cannot
 * `LISTEN`, so the hub is fed by reading the table every {@link RESULTS_POLL_MS}
 * (lib/results/listener.ts): the stream and the JSON routes show the same totals
 * at most that much later than a counting instance would. `/readyz` is 503 while
 * the last read is older than {@link STALE_READ_MS}.
 *
 * @example
 * ```ts
 * import { startResultsOnly } from "./only.ts";
 * const instance = await startResultsOnly(config); // serving
 * await instance.stop(); // streams ended, connections closed, server stopped
 * ```
 *
 * @module
 */

import postgres from "postgres";
import type { Config } from "../config/config.ts";
import { redactUrl } from "../config/url.ts";
import { pending } from "../database/migrations.ts";
import { connectDatabase } from "../database/pool.ts";
import { serveControlPlane } from "../http/server.ts";
import { getLogger } from "../log.ts";
import { createProcessRegistry } from "../metrics/registry.ts";
import { resultsMetrics } from "./metrics.ts";
import { abortable, retry } from "../retry.ts";
import { databaseRetry, describeConnectionFailure, isConnectionFailure, StartupDeadline } from "../startup.ts";
import { bounded } from "../timeout.ts";
import { type LiveResults, startLiveResults } from "./live.ts";
import { RESULTS_APPLICATION_NAME } from "./listener.ts";

const log = getLogger("results");

/** How often a results-only instance reads `vote_results`. */
export const RESULTS_POLL_MS = 1000;
/** A last successful read older than this makes `/readyz` answer 503. */
export const STALE_READ_MS = 5 * RESULTS_POLL_MS;

/** A running results-only instance. */
export interface ResultsOnly {
  live: LiveResults;
  /** Where it listens. */
  http: Deno.NetAddr;
  /** Ends the streams (last totals sent), closes the connections and the server. */
  stop(): Promise<void>;
}

/** The schema is missing or older than this version reads; the message says what to do. */
export class SchemaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SchemaError";
  }
}

/**
 * Starts a results-only instance.
 *
 * @throws {SchemaError} when the schema is missing or not current
 * @throws {AbortedError} when `signal` aborts first
 * @throws when the database does not answer within `STARTUP_TIMEOUT_SECONDS` (when set)
 */
export async function startResultsOnly(config: Config, signal?: AbortSignal): Promise<ResultsOnly> {
  const url = config.resultsDatabaseUrl ?? config.databaseUrl;
  const deadline = new StartupDeadline(config.startupTimeoutMs, signal);
  let live: LiveResults;
  try {
    await abortable(checkSchema(config, url, deadline.signal), deadline.signal);
    live = await abortable(
      startLiveResults(config, { pollMs: RESULTS_POLL_MS, readOnly: true }),
      deadline.signal,
    );
  } catch (error) {
    throw deadline.explain(error, () => `database: cannot read the schema at ${redactUrl(url)} yet`);
  }
  const readiness = () => {
    const { lastReadAt, lastReadError } = live.listener;
    const ready = lastReadAt !== undefined && performance.now() - lastReadAt < STALE_READ_MS;
    const reason = ready ? null : `database: no read of vote_results for ${STALE_READ_MS / 1000} s (${lastReadError})`;
    return { ready, mode: "results", reason, database: ready ? "up" : `down: ${lastReadError}` };
  };
  // The build, the process and the live results' metrics: none of the counting's (it counts nothing).
  const registry = createProcessRegistry();
  resultsMetrics([registry], live.stats);
  const listening = Promise.withResolvers<Deno.NetAddr>();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = serveControlPlane({
      hostname: config.httpHost,
      port: config.prometheusPort,
      adminToken: undefined,
      metrics: { registry },
      readiness,
      results: live.handle,
      onListen: (addr) => listening.resolve(addr),
    });
  } catch (error) {
    await live.stop();
    throw error;
  }
  const http = await listening.promise;
  log.info("Results only: serving {host}:{port} from {url}, read-only, reading vote_results every {ms} ms", {
    host: http.hostname,
    port: http.port,
    url: redactUrl(url),
    ms: RESULTS_POLL_MS,
  });
  let stopping: Promise<void> | undefined;
  const stop = async () => {
    await live.stop();
    await bounded(server.shutdown(), "closing the HTTP server");
  };
  return { live, http, stop: () => stopping ??= stop() };
}

/** Connects (retrying as start-up does) and checks that every migration this version reads is applied. */
async function checkSchema(config: Config, url: string, signal?: AbortSignal): Promise<void> {
  const sql = connectDatabase(
    { ...config, databaseUrl: url, postgresMaxConnections: 1 },
    { applicationName: RESULTS_APPLICATION_NAME, prepare: false, readOnly: true },
  );
  const where = redactUrl(url);
  try {
    const missing = await retry(() => pending(sql), databaseRetry(url, config.connectTimeoutMs, signal)).catch(
      (error) => {
        const cause = (error as Error).cause ?? error;
        if (cause instanceof postgres.PostgresError && cause.code === "42501") {
          throw new SchemaError(
            `The role at ${where} may not read schema_migrations (${cause.message}): ` +
              "grant it the results reader's rights (sql/role_results_reader.sql)",
          );
        }
        if (isConnectionFailure(cause)) {
          throw new Error(
            `Cannot connect to PostgreSQL at ${where}: ${describeConnectionFailure(cause, config.connectTimeoutMs)}. ` +
              "Is it running, and are RESULTS_DATABASE_URL (or DATABASE_URL) and its user right?",
            { cause },
          );
        }
        throw error;
      },
    );
    if (missing.length === 0) return;
    const names = missing.map((m) => m.name).join(", ");
    throw new SchemaError(
      missing.some((migration) => migration.version === 1)
        ? `The schema is missing at ${where} (no migration applied): a results-only instance never migrates. ` +
          "Start a counting instance (vote-aggregator) on the primary once; it creates the schema, and a standby follows"
        : `The schema at ${where} lacks ${names}, which this version reads: a results-only instance never migrates. ` +
          "Start a counting instance of this version on the primary first; it applies them, and a standby follows",
    );
  } finally {
    await sql.end({ timeout: 1 });
  }
}
