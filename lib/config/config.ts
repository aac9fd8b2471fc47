/**
 * Configuration: resolves the environment (and `.env`) into one validated
 * {@link Config}, each value checked against its rule; a value that breaks one
 * is a {@link ConfigError} naming the variable. Which variables exist, their
 * defaults and docs are the table in {@link ./variables.ts}; building and
 * redacting URLs is {@link ./url.ts}. The seed's variable names and defaults
 * are kept so that the Python aggregator's `.env` works unchanged.
 *
 * @example
 * ```ts
 * import { loadConfig } from "./config.ts";
 * const config = loadConfig({ BATCH_SIZE: "500" });
 * console.log(config.batchSize); // 500
 * ```
 *
 * @module
 */

import dotenv from "dotenv";
import { buildUrl, hostList } from "./url.ts";
import { ConfigError, type EnvReader, valueReaders } from "./values.ts";

export { ConfigError, type EnvReader };

/** Log levels as the seed names them (Python's logging levels). */
export type LogLevel = "DEBUG" | "INFO" | "WARNING" | "ERROR";
/** How log lines are written. */
export type LogFormat = "text" | "json";
/** RabbitMQ queue type of the vote queue. */
export type QueueType = "classic" | "quorum";
/** PostgreSQL TLS modes, as libpq names them. */
export type SslMode = "disable" | "prefer" | "require" | "verify-full";

/** The service's whole configuration, resolved and validated. */
export interface Config {
  /** AMQP URLs of the broker's nodes (one or more), from `RABBITMQ_URL` or the `RABBITMQ_*` parts. Hold the password. */
  rabbitmqUrls: string[];
  /** Queue the votes are consumed from. @default "votes.aggregation" */
  rabbitmqQueue: string;
  /** Unacknowledged messages the broker may push ahead (bounds memory). @default 3000 */
  rabbitmqPrefetchCount: number;
  /** @default "classic" */
  rabbitmqQueueType: QueueType;
  /** Quorum queues only: deliveries of one message before the broker dead-letters it. @default 20 */
  rabbitmqDeliveryLimit: number;
  /** CA bundle (PEM) for `amqps://`. */
  rabbitmqCaFile: string | undefined;
  /**
   * PostgreSQL URL, from `DATABASE_URL` or built from the `POSTGRES_*` parts; several hosts in libpq's form
   * (`h1:5432,h2:5432`, read by `parseDatabaseUrl` in ./url.ts). Holds the password.
   */
  databaseUrl: string;
  /**
   * `RESULTS_DATABASE_URL`: where the live results' listener and readers connect (a session: `LISTEN`), when the
   * write pool goes through a transaction pooler; unset, they use `databaseUrl`. Holds the password.
   */
  resultsDatabaseUrl: string | undefined;
  /** Connections opened at start. @default 2 */
  postgresMinConnections: number;
  /** Pool size. @default 10 */
  postgresMaxConnections: number;
  /**
   * Streaming standbys that must have flushed a batch's commit before it is acknowledged, so that a failover
   * to any of them loses no acknowledged vote (`../database/standbys.ts`). @default 0
   */
  postgresMinStandbys: number;
  /** @default "prefer" */
  postgresSslMode: SslMode;
  /** CA bundle (PEM) for `verify-full`. */
  postgresSslRootCert: string | undefined;
  /** Named prepared statements: `true`, `false` (behind a transaction pooler), or `auto` (detected, `../database/pooler.ts`). @default "auto" */
  postgresPrepare: "auto" | "true" | "false";
  /** A batch closes when it holds this many messages. @default 1000 */
  batchSize: number;
  /** ...or this long after its first message at the latest (sooner once deliveries pause). @default 1000 (`BATCH_TIMEOUT_SECONDS=1.0`) */
  batchTimeoutMs: number;
  /** Closed batches committing at once; acknowledgements stay in delivery order. @default 1 */
  maxInflightBatches: number;
  /** Attempts of one batch's transaction before the service stops consuming. @default 3 */
  maxRetryAttempts: number;
  /** First backoff between attempts; doubles each time. @default 1000 (`RETRY_DELAY_SECONDS=1.0`) */
  retryDelayMs: number;
  /** Longest one transaction may go unanswered before the attempt counts as failed. @default 30000 */
  commitTimeoutMs: number;
  /** Port of the HTTP control plane (/metrics, /healthz, admin routes). @default 8001 */
  prometheusPort: number;
  /** Address the HTTP server binds. @default "0.0.0.0" */
  httpHost: string;
  /** Bearer token for POST /flush, /pause, /resume; without it those routes answer 403. */
  adminToken: string | undefined;
  /** Token the results routes and page require; without it they are public (read-only). */
  resultsToken: string | undefined;
  /** Origins allowed to read the results routes from a browser (`["*"]`: any). @default [] (same origin) */
  resultsCorsOrigins: string[];
  /** Results stream clients at once. @default 2000 */
  resultsMaxClients: number;
  /** Heartbeat interval of the results stream. @default 15000 */
  resultsHeartbeatMs: number;
  /** Shortest time between two totals events to a stream client (0: every change at once). @default 100 */
  resultsEventIntervalMs: number;
  /** `max-age` and `stale-while-revalidate` of the public results and page, in seconds (0: `no-cache`). @default 1 */
  resultsCacheSeconds: number;
  /** How the page follows the results: its stream (polling when refused) or polling `/results`. @default "stream" */
  resultsPageMode: "stream" | "poll";
  /** Whether this instance serves the results routes and page. @default true */
  resultsEnabled: boolean;
  /** @default "INFO" */
  logLevel: LogLevel;
  /** @default "text" */
  logFormat: LogFormat;
  /** Longest a graceful shutdown waits for the last commit. @default 30000 */
  shutdownTimeoutMs: number;
  /** Distinct laws with series of their own in the per-law metrics; the rest share `law_id="other"`. @default 1000 */
  metricsMaxLaws: number;
  /** Longest wait for TCP, TLS and the handshake of one connection attempt (broker or database). @default 10000 */
  connectTimeoutMs: number;
  /**
   * Longest start-up waits for the database and the broker to answer before the start fails; 0 waits for ever.
   * @default 0
   */
  startupTimeoutMs: number;
  /** Largest body read as a vote; a larger one is dead-lettered as `oversized`, only its first bytes kept. @default 16384 */
  maxMessageBytes: number;
}

/**
 * Resolves and validates the configuration from `env`.
 *
 * @param env the variables (a record, or a reader such as `Deno.env.get`)
 * @throws {ConfigError} on the first value that breaks its rule
 */
export function loadConfig(
  env: Record<string, string | undefined> | EnvReader,
): Config {
  const read: EnvReader = typeof env === "function" ? env : (n) => env[n];
  const { text, optional, integer, seconds, oneOf, boolean, urls, databaseUrl: postgresUrl, name, origins } =
    valueReaders(read);

  const tls = boolean("RABBITMQ_TLS");
  const brokerUrls = (): string[] => {
    const port = integer("RABBITMQ_PORT", 1, 65535);
    const nodes = hostList(text("RABBITMQ_HOST"));
    const rule = "must be host or host:port, or several separated by commas";
    if (nodes === undefined) throw new ConfigError("RABBITMQ_HOST", rule, text("RABBITMQ_HOST"));
    return nodes.map((node) =>
      buildUrl(
        tls ? "amqps" : "amqp",
        text("RABBITMQ_USER"),
        text("RABBITMQ_PASSWORD"),
        node.host,
        node.port ?? port,
        text("RABBITMQ_VHOST"),
      )
    );
  };
  const rabbitmqUrls = urls("RABBITMQ_URL", ["amqp", "amqps"]) ?? brokerUrls();
  const databaseUrlFromParts = (): string => {
    const port = integer("POSTGRES_PORT", 1, 65535);
    const hosts = hostList(text("POSTGRES_HOST"));
    const rule = "must be host or host:port, or several separated by commas";
    if (hosts === undefined) throw new ConfigError("POSTGRES_HOST", rule, text("POSTGRES_HOST"));
    return buildUrl("postgres", text("POSTGRES_USER"), text("POSTGRES_PASSWORD"), hosts, port, name("POSTGRES_DB", 63));
  };
  const databaseUrl = postgresUrl("DATABASE_URL") ?? databaseUrlFromParts();

  const config: Config = {
    rabbitmqUrls,
    rabbitmqQueue: name("RABBITMQ_QUEUE", 255),
    rabbitmqPrefetchCount: integer("RABBITMQ_PREFETCH_COUNT", 1, 65535),
    rabbitmqQueueType: oneOf("RABBITMQ_QUEUE_TYPE", ["classic", "quorum"]),
    rabbitmqDeliveryLimit: integer("RABBITMQ_DELIVERY_LIMIT", 1, 1_000_000),
    rabbitmqCaFile: optional("RABBITMQ_CA_FILE"),
    databaseUrl,
    resultsDatabaseUrl: postgresUrl("RESULTS_DATABASE_URL"),
    postgresMinConnections: integer("POSTGRES_MIN_CONNECTIONS", 0, 1000),
    postgresMaxConnections: integer("POSTGRES_MAX_CONNECTIONS", 1, 1000),
    postgresMinStandbys: integer("POSTGRES_MIN_STANDBYS", 0, 16),
    postgresSslMode: oneOf("POSTGRES_SSLMODE", [
      "disable",
      "prefer",
      "require",
      "verify-full",
    ]),
    postgresSslRootCert: optional("POSTGRES_SSLROOTCERT"),
    postgresPrepare: oneOf("POSTGRES_PREPARE", ["auto", "true", "false"]),
    batchSize: integer("BATCH_SIZE", 1, 100_000),
    batchTimeoutMs: seconds("BATCH_TIMEOUT_SECONDS", 0.001, 3600),
    maxInflightBatches: integer("MAX_INFLIGHT_BATCHES", 1, 64),
    maxRetryAttempts: integer("MAX_RETRY_ATTEMPTS", 1, 100),
    retryDelayMs: seconds("RETRY_DELAY_SECONDS", 0, 3600),
    commitTimeoutMs: seconds("COMMIT_TIMEOUT_SECONDS", 0.1, 3600),
    prometheusPort: integer("PROMETHEUS_PORT", 0, 65535),
    httpHost: name("HTTP_HOST", 255),
    adminToken: optional("ADMIN_TOKEN"),
    resultsToken: optional("RESULTS_TOKEN"),
    resultsCorsOrigins: origins("RESULTS_CORS_ORIGINS"),
    resultsMaxClients: integer("RESULTS_MAX_CLIENTS", 1, 100_000),
    resultsHeartbeatMs: seconds("RESULTS_HEARTBEAT_SECONDS", 1, 3600),
    resultsEventIntervalMs: integer("RESULTS_EVENT_INTERVAL_MS", 0, 60_000),
    resultsCacheSeconds: integer("RESULTS_CACHE_SECONDS", 0, 3600),
    resultsPageMode: oneOf("RESULTS_PAGE_MODE", ["stream", "poll"]),
    resultsEnabled: boolean("RESULTS_ENABLED"),
    logLevel: oneOf(
      "LOG_LEVEL",
      ["DEBUG", "INFO", "WARNING", "ERROR"],
      (s) => s.toUpperCase() === "WARN" ? "WARNING" : s.toUpperCase(),
    ),
    logFormat: oneOf("LOG_FORMAT", ["text", "json"]),
    shutdownTimeoutMs: seconds("SHUTDOWN_TIMEOUT_SECONDS", 0, 3600),
    metricsMaxLaws: integer("METRICS_MAX_LAWS", 1, 100_000),
    connectTimeoutMs: seconds("CONNECT_TIMEOUT_SECONDS", 0.1, 3600),
    startupTimeoutMs: seconds("STARTUP_TIMEOUT_SECONDS", 0, 86_400),
    maxMessageBytes: integer("MAX_MESSAGE_BYTES", 256, 1024 * 1024),
  };
  if (config.postgresMinConnections > config.postgresMaxConnections) {
    throw new ConfigError(
      "POSTGRES_MIN_CONNECTIONS",
      `must not exceed POSTGRES_MAX_CONNECTIONS (${config.postgresMaxConnections})`,
      String(config.postgresMinConnections),
    );
  }
  for (const [variable, token] of [["ADMIN_TOKEN", config.adminToken], ["RESULTS_TOKEN", config.resultsToken]]) {
    if (token !== undefined && token.length < 16) {
      throw new ConfigError(variable!, "must be at least 16 characters (try: openssl rand -hex 32)", "<redacted>");
    }
  }
  return config;
}

/**
 * Reads `.env` from the working directory into a reader where the real
 * environment wins. A missing file is not an error.
 *
 * @param path the file to read
 * @param getenv the real environment
 */
export async function envWithDotenv(
  path = ".env",
  getenv: EnvReader = (n) => Deno.env.get(n),
): Promise<EnvReader> {
  let fromFile: Record<string, string> = {};
  try {
    fromFile = dotenv.parse(await Deno.readTextFile(path));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return (name) => getenv(name) ?? fromFile[name];
}
