/**
 * The variable table: every environment variable the service reads, with its
 * default and its one-line documentation. docs/configuration.md's table,
 * `.env.example` and the `--allow-env` list of the permission set are checked
 * against it. How a value is validated lives in {@link ./config.ts}, not here.
 *
 * @example
 * ```ts
 * import { describeVariable } from "./variables.ts";
 * console.log(describeVariable("BATCH_SIZE").default); // "1000"
 * ```
 *
 * @module
 */

/** What {@link VARIABLES} says of one variable. */
export interface Variable {
  /** Default as it would be written in `.env`; `undefined` when optional. */
  default?: string;
  /** One line for docs/configuration.md and `.env.example`. */
  doc: string;
}

/**
 * Every variable the service reads. Also the `--allow-env` list of the
 * permission set, so a variable added here is readable under `deno task start`.
 */
export const VARIABLES = {
  RABBITMQ_URL: {
    doc: "Full AMQP URL (amqp:// or amqps://), or several separated by commas (cluster nodes); wins over the parts",
  },
  RABBITMQ_HOST: {
    default: "localhost",
    doc: "Broker host, or several host[:port] separated by commas (cluster nodes, same credentials)",
  },
  RABBITMQ_PORT: { default: "5672", doc: "Broker port" },
  RABBITMQ_USER: { default: "guest", doc: "Broker user" },
  RABBITMQ_PASSWORD: { default: "guest", doc: "Broker password" },
  RABBITMQ_VHOST: { default: "/", doc: "Broker virtual host" },
  RABBITMQ_TLS: { default: "false", doc: "Connect with amqps://" },
  RABBITMQ_CA_FILE: { doc: "CA bundle (PEM) that signs the broker's certificate" },
  RABBITMQ_QUEUE: { default: "votes.aggregation", doc: "Queue of validated votes" },
  RABBITMQ_PREFETCH_COUNT: {
    default: "3000",
    doc: "Unacknowledged messages in flight (bounds memory; keep ≥ 2 × BATCH_SIZE)",
  },
  RABBITMQ_QUEUE_TYPE: { default: "classic", doc: "classic or quorum" },
  RABBITMQ_DELIVERY_LIMIT: {
    default: "20",
    doc: "Quorum queues: deliveries before the broker dead-letters a message",
  },
  DATABASE_URL: {
    doc:
      "Full PostgreSQL URL, or libpq's multi-host form (postgres://u:p@h1:5432,h2:5432/db); wins over the POSTGRES_* parts",
  },
  POSTGRES_HOST: {
    default: "localhost",
    doc: "Database host, or several host[:port] separated by commas (the one that takes writes is used)",
  },
  POSTGRES_PORT: { default: "5432", doc: "Database port" },
  POSTGRES_DB: { default: "election_votes", doc: "Database name" },
  POSTGRES_USER: { default: "postgres", doc: "Database user" },
  POSTGRES_PASSWORD: { default: "postgres", doc: "Database password" },
  POSTGRES_MIN_CONNECTIONS: { default: "2", doc: "Connections opened at start" },
  POSTGRES_MAX_CONNECTIONS: { default: "10", doc: "Pool size" },
  POSTGRES_MIN_STANDBYS: {
    default: "0",
    doc: "Acknowledge a batch only once this many streaming standbys flushed its commit (0: at commit)",
  },
  POSTGRES_SSLMODE: {
    default: "prefer",
    doc: "disable, prefer, require or verify-full",
  },
  POSTGRES_SSLROOTCERT: { doc: "CA bundle (PEM) for verify-full" },
  POSTGRES_PREPARE: {
    default: "auto",
    doc: "Named prepared statements: true, false (PgBouncer transaction mode) or auto (off when a pooler is seen)",
  },
  BATCH_SIZE: { default: "1000", doc: "Messages per batch (one transaction)" },
  BATCH_TIMEOUT_SECONDS: {
    default: "1.0",
    doc: "Longest a batch waits; it commits sooner once deliveries pause",
  },
  MAX_INFLIGHT_BATCHES: {
    default: "1",
    doc: "Closed batches committing at once (acknowledged in order)",
  },
  MAX_RETRY_ATTEMPTS: {
    default: "3",
    doc: "Attempts of a failing transaction before consumption pauses",
  },
  RETRY_DELAY_SECONDS: {
    default: "1.0",
    doc: "First retry delay; doubles per attempt",
  },
  COMMIT_TIMEOUT_SECONDS: {
    default: "30",
    doc: "Longest a commit may wait for the database before the attempt fails",
  },
  PROMETHEUS_PORT: { default: "8001", doc: "HTTP port (/metrics and control plane)" },
  HTTP_HOST: { default: "0.0.0.0", doc: "HTTP bind address" },
  ADMIN_TOKEN: {
    doc: "Bearer token for POST /flush, /pause, /resume (unset: those answer 403)",
  },
  RESULTS_DATABASE_URL: {
    doc: "PostgreSQL URL of the results' listener and readers, a session for LISTEN (unset: DATABASE_URL)",
  },
  RESULTS_TOKEN: {
    doc: "Token the results routes and the page require (unset: public, read-only)",
  },
  RESULTS_CORS_ORIGINS: {
    doc: "Browser origins allowed to read the results (comma-separated, or *)",
  },
  RESULTS_MAX_CLIENTS: { default: "2000", doc: "Results stream clients at once; more get 503" },
  RESULTS_HEARTBEAT_SECONDS: { default: "15", doc: "Heartbeat comment interval on the results stream" },
  RESULTS_EVENT_INTERVAL_MS: {
    default: "100",
    doc: "Least time between two results stream events; changes meanwhile are sent together (0: each at once)",
  },
  RESULTS_CACHE_SECONDS: {
    default: "1",
    doc:
      "max-age (and stale-while-revalidate) a shared cache may keep the public results and page (0: revalidate each time)",
  },
  RESULTS_PAGE_MODE: {
    default: "stream",
    doc:
      "How the page follows the results: stream (/results/stream, polling when refused) or poll (/results each second)",
  },
  RESULTS_ENABLED: {
    default: "true",
    doc: "Serve the results routes and page on this instance (false: counting only; see `vote-aggregator results`)",
  },
  LOG_LEVEL: { default: "INFO", doc: "DEBUG, INFO, WARNING or ERROR" },
  LOG_FORMAT: { default: "text", doc: "text or json (one JSON object a line)" },
  METRICS_MAX_LAWS: {
    default: "1000",
    doc: 'Laws with metric series of their own; the rest share law_id="other"',
  },
  SHUTDOWN_TIMEOUT_SECONDS: {
    default: "30",
    doc: "Longest wait for the last commit on SIGTERM/SIGINT",
  },
  CONNECT_TIMEOUT_SECONDS: {
    default: "10",
    doc: "Longest wait for TCP, TLS and the handshake of one broker or database connection attempt",
  },
  STARTUP_TIMEOUT_SECONDS: {
    default: "0",
    doc: "Longest start-up waits for PostgreSQL and RabbitMQ before it exits 1 (0: waits for ever)",
  },
  MAX_MESSAGE_BYTES: {
    default: "16384",
    doc: "Largest message body read as a vote; larger ones are dead-lettered as oversized, truncated",
  },
} as const satisfies Record<string, Variable>;

/** Name of a variable the service reads. */
export type VariableName = keyof typeof VARIABLES;

/** All variable names, for `--allow-env`. */
export const VARIABLE_NAMES = Object.keys(VARIABLES) as VariableName[];

/** A variable's default and doc line (`default` is `undefined` when optional). */
export function describeVariable(name: VariableName): Variable {
  return VARIABLES[name];
}
