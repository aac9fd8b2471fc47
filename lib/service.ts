/**
 * The service assembled from its parts: pool and migrations, writer,
 * pipeline, broker session and control plane. `main.ts` runs it as a process;
 * tests run it in-process against their own queue and database.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config/config.ts";
 * import { startService } from "./service.ts";
 * const service = await startService(loadConfig(Deno.env.get));
 * await service.stop(); // drains: commits and acknowledges what is batched
 * ```
 *
 * @module
 */

import type { Config } from "./config/config.ts";
import { redactUrl } from "./config/url.ts";
import { MAX_COPIED_HEADER_BYTES } from "./broker/copied_headers.ts";
import { BrokerSession } from "./broker/session.ts";
import { BrokerNodes } from "./broker/nodes.ts";
import { connectDatabase, type Sql } from "./database/pool.ts";
import { DatabaseProbe, PROBE_APPLICATION_NAME, PROBE_TIMEOUT_MS } from "./database/probe.ts";
import { migrate } from "./database/migrations.ts";
import { serveControlPlane } from "./http/server.ts";
import { getLogger } from "./log.ts";
import { createMetrics, type Metrics } from "./metrics/registry.ts";
import { Aggregator } from "./pipeline/aggregator.ts";
import { type LiveResults, startLiveResults } from "./results/live.ts";
import { resultsMetrics } from "./results/metrics.ts";
import { abortable, AbortedError } from "./retry.ts";
import { openDatabase, StartupDeadline, StartupProgress } from "./startup.ts";
import { bounded, CLOSE_TIMEOUT_MS } from "./timeout.ts";
import { VoteWriter } from "./database/writer.ts";
import { ServerInUse } from "./database/server.ts";
import { StandbyWaiter, unprotectedReplication } from "./database/standbys.ts";

const log = getLogger("service");

/** A running service. */
export interface Service {
  aggregator: Aggregator;
  broker: BrokerSession;
  metrics: Metrics;
  sql: Sql;
  /** The live results: hub, listening connection, routes; undefined with `RESULTS_ENABLED=false`. */
  results: LiveResults | undefined;
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

/** What start-up is doing, as told to {@link StartOptions.onPhase}. */
export type StartPhase = "connecting to PostgreSQL" | "migrating" | "connecting to RabbitMQ";

/** Options of {@link startService}. */
export interface StartOptions {
  /** Once aborted, start-up stops wherever it is, closes what it opened and throws an `AbortedError`. */
  signal?: AbortSignal;
  /** Told as each phase begins. */
  onPhase?: (phase: StartPhase) => void;
}

/** Bytes of unacknowledged messages (bodies and headers) above which the start warns. */
const IN_FLIGHT_WARNING_BYTES = 256 * 2 ** 20;

/** How often the server in use is asked who it is (`database/server.ts`): a failover shows within this. */
const SERVER_CHECK_MS = 2000;

/**
 * Starts the service. The control plane answers at once (`/healthz` 200, `/readyz` 503 naming what start-up waits
 * for); the database and the broker are waited for, retried with backoff ({@link ./startup.ts}), until they answer,
 * or until `STARTUP_TIMEOUT_SECONDS` when set. Fails (and closes what it opened) at a refusal (a wrong password, an
 * untrusted certificate), at that deadline, or when `options.signal` aborts.
 */
export async function startService(config: Config, options: StartOptions = {}): Promise<Service> {
  const metrics = createMetrics();
  const progress = new StartupProgress();
  let pipeline: Pipeline | undefined;
  let results: LiveResults | undefined;
  // Read at each scrape; before the live results start, the results_* series stay 0.
  resultsMetrics([metrics.registry], () => results?.stats());

  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = serveControlPlane({
    hostname: config.httpHost,
    port: config.prometheusPort,
    adminToken: config.adminToken,
    pipeline: () => pipeline?.aggregator ?? progress,
    metrics,
    results: (request, url) => results?.handle(request, url),
    onListen: (addr) => listening.resolve(addr),
  });
  const http = await listening.promise;

  const deadline = new StartupDeadline(config.startupTimeoutMs, options.signal);
  let sql: Sql | undefined;
  let probe: DatabaseProbe | undefined;
  let database: ServerInUse | undefined;
  let serverCheck: ReturnType<typeof setInterval> | undefined;
  try {
    options.onPhase?.("connecting to PostgreSQL");
    const url = redactUrl(config.databaseUrl);
    sql = await openDatabase(config, deadline.signal, (failure) => {
      progress.waiting("database", `cannot connect to PostgreSQL at ${url}: ${failure}; retrying`);
    });
    options.onPhase?.("migrating");
    progress.waiting("database", "migrating");
    // A migration abandoned here is rolled back: its transaction ends with the pool.
    const applied = await abortable(migrate(sql), deadline.signal);
    if (applied.length) log.info("Applied migrations {applied}", { applied });
    // Off on a counting instance whose audience is served by results-only instances (`vote-aggregator results`).
    if (config.resultsEnabled) {
      progress.waiting("database", "loading the results");
      results = await abortable(startLiveResults(config), deadline.signal);
    }

    const risk = await unprotectedReplication(sql, config.postgresMinStandbys).catch(() => undefined);
    if (risk !== undefined) log.warn("{risk}", { risk });
    const opened = sql;
    database = new ServerInUse(config.databaseUrl, (host, previous) => {
      if (previous !== undefined) metrics.postgresConnectedHost.set({ host: previous }, 0);
      if (host !== undefined) metrics.postgresConnectedHost.set({ host }, 1);
    });
    for (const host of database.hosts) metrics.postgresConnectedHost.set({ host: host.address }, 0);
    await database.refresh(opened);
    const inUse = database;
    const check = setInterval(() => void inUse.refresh(opened), SERVER_CHECK_MS);
    Deno.unrefTimer(check);
    serverCheck = check;

    pipeline = assemble(config, sql, metrics, database);
    const { aggregator } = pipeline;
    probe = new DatabaseProbe(
      () =>
        connectDatabase({ ...config, postgresMaxConnections: 1, connectTimeoutMs: PROBE_TIMEOUT_MS }, {
          prepare: false,
          applicationName: PROBE_APPLICATION_NAME,
        }),
      {
        onChange: (failure) => {
          if (failure === undefined) log.info("PostgreSQL answers its probe again");
          else log.warn("PostgreSQL does not answer its probe: {failure}", { failure });
          aggregator.databaseProbed(failure);
        },
      },
    );
    probe.start();

    options.onPhase?.("connecting to RabbitMQ");
    await pipeline.broker.start(deadline.signal);
    if (deadline.signal.aborted) throw new AbortedError();
  } catch (error) {
    await probe?.stop();
    if (pipeline) await bounded(pipeline.broker.close(), "closing the broker connection");
    await results?.stop();
    await bounded(server.shutdown(), "closing the HTTP server");
    clearInterval(serverCheck);
    await sql?.end({ timeout: 1 });
    throw deadline.explain(error, () => (pipeline?.aggregator ?? progress).readiness().reason);
  }
  const { aggregator, broker } = pipeline;
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

  const live = results;
  const pool = sql;
  const databaseProbe = probe;
  let stopping: Promise<boolean> | undefined;
  const stop = async (): Promise<boolean> => {
    const complete = await aggregator.drain(config.shutdownTimeoutMs);
    if (!complete) {
      log.error(
        "Shutdown timed out after {ms} ms with votes not committed; they stay unacknowledged and will be redelivered",
        { ms: config.shutdownTimeoutMs },
      );
    }
    // Streams never end by themselves: they end here, after the last commit, before the server stops
    // (a client that reads nothing keeps its connection's last write pending: the bounded wait below).
    await live?.stop();
    await databaseProbe.stop();
    await bounded(broker.close(), "closing the broker connection");
    clearInterval(serverCheck);
    await pool.end({ timeout: CLOSE_TIMEOUT_MS / 1000 });
    await bounded(server.shutdown(), "closing the HTTP server");
    log.info("Stopped: {totals}", { totals: aggregator.totals });
    return complete;
  };
  return {
    aggregator,
    broker,
    metrics,
    sql: pool,
    results: live,
    http,
    stop: () => stopping ??= stop(),
  };
}

/** The writer, the broker session and the pipeline, wired to each other and to the metrics. */
interface Pipeline {
  aggregator: Aggregator;
  broker: BrokerSession;
}

function assemble(config: Config, sql: Sql, metrics: Metrics, database: ServerInUse): Pipeline {
  const standbys = config.postgresMinStandbys === 0 ? undefined : new StandbyWaiter(sql, {
    minStandbys: config.postgresMinStandbys,
    onLag: (lags) => {
      metrics.postgresStandbyLag.reset();
      for (const { standby, bytes } of lags) metrics.postgresStandbyLag.set({ standby }, bytes);
    },
  });
  const writer = new VoteWriter(sql, {
    standbys,
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
  for (const node of new BrokerNodes(config.rabbitmqUrls).nodes) {
    metrics.brokerConnectedNode.set({ node: node.address }, 0);
  }
  const broker: BrokerSession = new BrokerSession({
    urls: config.rabbitmqUrls,
    queue: config.rabbitmqQueue,
    prefetch: config.rabbitmqPrefetchCount,
    queueType: config.rabbitmqQueueType,
    deliveryLimit: config.rabbitmqDeliveryLimit,
    caFile: config.rabbitmqCaFile,
    connect: { timeoutMs: config.connectTimeoutMs },
    maxMessageBytes: config.maxMessageBytes,
    onDelivery: (delivery) => aggregator.receive(delivery),
    onSessionChange: (connected, node) => {
      if (connected && ++sessions > 1) metrics.brokerReconnects.inc();
      metrics.brokerConnectedNode.set({ node }, connected ? 1 : 0);
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
    database: {
      get host() {
        return database.host;
      },
      get waiting() {
        return standbys?.waiting;
      },
    },
  });
  if (config.rabbitmqPrefetchCount < config.batchSize) {
    log.warn(
      "RABBITMQ_PREFETCH_COUNT ({prefetch}) is below BATCH_SIZE ({size}): batches can only close on time. Set it to at least twice BATCH_SIZE.",
      { prefetch: config.rabbitmqPrefetchCount, size: config.batchSize },
    );
  }

  const inFlightBytes = config.rabbitmqPrefetchCount * (config.maxMessageBytes + MAX_COPIED_HEADER_BYTES);
  if (inFlightBytes > IN_FLIGHT_WARNING_BYTES) {
    log.warn(
      "RABBITMQ_PREFETCH_COUNT ({prefetch}) × MAX_MESSAGE_BYTES ({max}) lets up to {mb} MB of messages wait for acknowledgement: lower one of them to bound memory.",
      { prefetch: config.rabbitmqPrefetchCount, max: config.maxMessageBytes, mb: Math.round(inFlightBytes / 2 ** 20) },
    );
  }
  return { aggregator, broker };
}
