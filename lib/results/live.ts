/**
 * Live results assembled: the hub, the listening connection that feeds it and
 * the routes that serve it, started with the service and stopped before its
 * HTTP server (lib/service.ts). It owns the order of those steps and nothing
 * else.
 *
 * @example
 * ```ts
 * import { startLiveResults } from "./live.ts";
 * const live = await startLiveResults(config); // listening, every law loaded
 * serveControlPlane({ ..., results: live.handle });
 * await live.stop(); // last totals sent, streams ended, connections closed
 * ```
 *
 * @module
 */

import type { Config } from "../config/config.ts";
import type { ResultsStats } from "./metrics.ts";
import { getLogger } from "../log.ts";
import { withTimeout } from "../timeout.ts";
import { redactUrl } from "../config/url.ts";
import { ResultsHub } from "./hub.ts";
import { ResultsListener } from "./listener.ts";
import { type ResultsHandler, resultsRoutes } from "./routes.ts";

const log = getLogger("results");

/** How long streams get to send their last event at shutdown before they are cut. */
const STREAM_END_GRACE_MS = 2000;

/** The running live results. */
export interface LiveResults {
  hub: ResultsHub;
  listener: ResultsListener;
  /** For lib/http/server.ts: answers the results routes, undefined for the others. */
  handle: ResultsHandler;
  /** Sends every stream the last committed totals, ends the streams, closes the connections. */
  stop(): Promise<void>;
  /** Clients, events sent, listener reconnects and requests, for the `results_*` metrics. */
  stats(): ResultsStats;
}

/** The configuration live results read. */
export type LiveResultsConfig = Pick<
  Config,
  | "databaseUrl"
  | "resultsDatabaseUrl"
  | "postgresSslMode"
  | "postgresSslRootCert"
  | "retryDelayMs"
  | "resultsToken"
  | "resultsCorsOrigins"
  | "resultsMaxClients"
  | "resultsHeartbeatMs"
  | "resultsEventIntervalMs"
  | "resultsCacheSeconds"
  | "resultsPageMode"
>;

/** Options of {@link startLiveResults}. */
export interface LiveResultsOptions {
  /** Read the table this often instead of listening (a results-only instance: it may read a standby). */
  pollMs?: number;
  /** Its reads in read-only transactions (a results-only instance). @default false */
  readOnly?: boolean;
}

/** Starts listening (or polling) and loads every law; resolves once the hub holds the table. */
export async function startLiveResults(
  config: LiveResultsConfig,
  options: LiveResultsOptions = {},
): Promise<LiveResults> {
  const hub = new ResultsHub({
    maxClients: config.resultsMaxClients,
    heartbeatMs: config.resultsHeartbeatMs,
    eventIntervalMs: config.resultsEventIntervalMs,
  });
  const listener = new ResultsListener({ config, hub, ...options });
  try {
    await listener.start();
  } catch (error) {
    hub.close();
    await listener.end();
    throw error;
  }
  if (config.resultsDatabaseUrl !== undefined) {
    log.info("Results: listening and reading at {url} (RESULTS_DATABASE_URL)", {
      url: redactUrl(config.resultsDatabaseUrl),
    });
  }
  const requests = { page: 0, results: 0, law: 0, stream: 0 };
  const handle = resultsRoutes({
    requests,
    hub,
    sql: listener.sql,
    token: config.resultsToken,
    corsOrigins: config.resultsCorsOrigins,
    cacheSeconds: config.resultsCacheSeconds,
    pageMode: config.resultsPageMode,
  });
  let stopping: Promise<void> | undefined;
  const stop = async () => {
    await listener.resynchronise().catch((error) =>
      log.warn("Results: no last resynchronisation before the streams end ({error})", { error: error.message })
    );
    hub.close();
    const ended = await withTimeout(hub.emptied(), STREAM_END_GRACE_MS, "").then(() => true, () => false);
    if (!ended) {
      log.warn("Results: {n} stream(s) not reading; cut", { n: hub.clients });
      hub.abortAll();
    }
    await listener.end();
  };
  const stats = (): ResultsStats => ({
    clients: hub.clients,
    events: hub.sent,
    listenerReconnects: Math.max(0, listener.listens - 1),
    requests: { ...requests },
  });
  return { hub, listener, handle, stop: () => stopping ??= stop(), stats };
}
