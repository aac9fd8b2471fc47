/**
 * The service assembled from its parts: pool and migrations, writer,
 * pipeline, broker session and control plane. `main.ts` runs it as a process;
 * tests run it in-process against their own queue and database.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * import { startService } from "./service.ts";
 * const service = await startService(loadConfig(Deno.env.get));
 * await service.stop(); // drains: commits and acknowledges what is batched
 * ```
 *
 * @module
 */

import type { Config } from "./config.ts";
import { redactUrl } from "./url.ts";
import { BrokerSession } from "./broker/session.ts";
import { connectDatabase, ensureDatabase, type Sql, warmUp } from "./database.ts";
import { migrate } from "./migrations.ts";
import { serveControlPlane } from "./http.ts";
import { getLogger } from "./log.ts";
import { createMetrics, type Metrics } from "./metrics.ts";
import { Aggregator } from "./pipeline/aggregator.ts";
import { type LiveResults, startLiveResults } from "./results/live.ts";
import { withTimeout } from "./timeout.ts";
import { VoteWriter } from "./writer.ts";

const log = getLogger("service");

/** Longest wait for the HTTP server's open connections at shutdown. */
const HTTP_SHUTDOWN_GRACE_MS = 2000;

/** A running service. */
export interface Service {
  aggregator: Aggregator;
  broker: BrokerSession;
  metrics: Metrics;
  sql: Sql;
  /** The live results: hub, listening connection, routes. */
  results: LiveResults;
  /** Where the control plane listens. */
  http: Deno.NetAddr;
  /**
   * Graceful stop: stop consuming, commit and acknowledge what is batched (at
   * most `shutdownTimeoutMs`), send the results streams the last totals and end
   * them, close channel, connection, pool and server.
   *
   * @returns true when everything received was committed and acknowledged
   */
  stop(): Promise<boolean>;
}

/**
 * Starts the service. Fails (and closes what it opened) when the database or
 * the broker cannot be reached at start.
 */
export async function startService(config: Config): Promise<Service> {
  const metrics = createMetrics();
  await ensureDatabase(config);
  const sql = connectDatabase(config);
  try {
    await warmUp(sql, config.postgresMinConnections);
  } catch (error) {
    await sql.end({ timeout: 1 });
    throw new Error(
      `Cannot connect to PostgreSQL at ${redactUrl(config.databaseUrl)}: ${(error as Error).message}. ` +
        "Is it running, does the database exist, and are POSTGRES_HOST/POSTGRES_DB/POSTGRES_USER right?",
      { cause: error },
    );
  }
  let results: LiveResults;
  try {
    const applied = await migrate(sql);
    if (applied.length) log.info("Applied migrations {applied}", { applied });
    results = await startLiveResults(config);
  } catch (error) {
    await sql.end({ timeout: 1 });
    throw error;
  }

  const writer = new VoteWriter(sql, {
    maxRetryAttempts: config.maxRetryAttempts,
    retryDelayMs: config.retryDelayMs,
    commitTimeoutMs: config.commitTimeoutMs,
    instance: `pid-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`,
    onLateCommit: (part) => aggregator.lateCommitted(part),
    onRetry: (error, attempt, delayMs) => {
      metrics.aggregationErrors.inc({ error_type: "database_retry" });
      log.warn("Commit attempt {attempt} failed ({error}); retrying in {delayMs} ms", {
        attempt,
        delayMs,
        error: (error as Error).message,
      });
    },
  });

  let sessions = 0;
  const broker: BrokerSession = new BrokerSession({
    url: config.rabbitmqUrl,
    queue: config.rabbitmqQueue,
    prefetch: config.rabbitmqPrefetchCount,
    queueType: config.rabbitmqQueueType,
    deliveryLimit: config.rabbitmqDeliveryLimit,
    caFile: config.rabbitmqCaFile,
    onDelivery: (delivery) => aggregator.receive(delivery),
    onSessionChange: (connected) => {
      if (connected && ++sessions > 1) metrics.brokerReconnects.inc();
      if (!connected) metrics.aggregationErrors.inc({ error_type: "broker" });
      aggregator.brokerChanged(connected);
    },
  });
  const aggregator: Aggregator = new Aggregator({
    broker,
    writer,
    metrics,
    batchSize: config.batchSize,
    batchTimeoutMs: config.batchTimeoutMs,
    maxInflightBatches: config.maxInflightBatches,
    poolSize: config.postgresMaxConnections,
    retryDelayMs: config.retryDelayMs,
    metricsMaxLaws: config.metricsMaxLaws,
  });
  if (config.rabbitmqPrefetchCount < config.batchSize) {
    log.warn(
      "RABBITMQ_PREFETCH_COUNT ({prefetch}) is below BATCH_SIZE ({size}): batches can only close on time. Set it to at least twice BATCH_SIZE.",
      { prefetch: config.rabbitmqPrefetchCount, size: config.batchSize },
    );
  }

  const listening = Promise.withResolvers<Deno.NetAddr>();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = serveControlPlane({
      hostname: config.httpHost,
      port: config.prometheusPort,
      adminToken: config.adminToken,
      aggregator,
      metrics,
      results: results.handle,
      onListen: (addr) => listening.resolve(addr),
    });
  } catch (error) {
    await results.stop();
    await sql.end({ timeout: 1 });
    throw new Error(
      `Cannot serve HTTP on ${config.httpHost}:${config.prometheusPort} (PROMETHEUS_PORT): ${(error as Error).message}`,
      { cause: error },
    );
  }
  const http = await listening.promise;

  try {
    await broker.start();
  } catch (error) {
    await broker.close();
    await results.stop();
    await server.shutdown();
    await sql.end({ timeout: 1 });
    throw error;
  }
  log.info(
    "Consuming {queue} ({queueType}) into {database}; batches of {size} or {timeout} ms; HTTP on {host}:{port}",
    {
      queue: config.rabbitmqQueue,
      queueType: config.rabbitmqQueueType,
      database: redactUrl(config.databaseUrl),
      size: config.batchSize,
      timeout: config.batchTimeoutMs,
      host: http.hostname,
      port: http.port,
    },
  );

  let stopping: Promise<boolean> | undefined;
  const stop = async (): Promise<boolean> => {
    const complete = await aggregator.drain(config.shutdownTimeoutMs);
    if (!complete) {
      log.error(
        "Shutdown timed out after {ms} ms with votes not committed; they stay unacknowledged and will be redelivered",
        { ms: config.shutdownTimeoutMs },
      );
    }
    // Streams never end by themselves: they end here, after the last commit, before the server stops.
    await results.stop();
    await broker.close();
    await sql.end({ timeout: 5 });
    // A results client that reads nothing keeps its connection's last write pending forever, and
    // shutdown() would wait for it: its stream was cut above, the process may go.
    await withTimeout(server.shutdown(), HTTP_SHUTDOWN_GRACE_MS, "").catch(() =>
      log.warn("HTTP connections still open {ms} ms after shutdown began (clients not reading); leaving them", {
        ms: HTTP_SHUTDOWN_GRACE_MS,
      })
    );
    log.info("Stopped: {totals}", { totals: aggregator.totals });
    return complete;
  };
  return {
    aggregator,
    broker,
    metrics,
    sql,
    results,
    http,
    stop: () => stopping ??= stop(),
  };
}
