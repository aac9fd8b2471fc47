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
import { buildUrl, parseOrigins, redactUrl } from "./url.ts";
import { type Variable, type VariableName, VARIABLES } from "./variables.ts";

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
  /** AMQP URL, from `RABBITMQ_URL` or built from the `RABBITMQ_*` parts. Holds the password: log {@link redactUrl}'s form only. */
  rabbitmqUrl: string;
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
  /** PostgreSQL URL, from `DATABASE_URL` or built from the `POSTGRES_*` parts. Holds the password. */
  databaseUrl: string;
  /** Connections opened at start. @default 2 */
  postgresMinConnections: number;
  /** Pool size. @default 10 */
  postgresMaxConnections: number;
  /** @default "prefer" */
  postgresSslMode: SslMode;
  /** CA bundle (PEM) for `verify-full`. */
  postgresSslRootCert: string | undefined;
  /** A batch closes when it holds this many messages. @default 1000 */
  batchSize: number;
  /** ...or this long after its first message arrived. @default 1000 (`BATCH_TIMEOUT_SECONDS=1.0`) */
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
  /** @default "INFO" */
  logLevel: LogLevel;
  /** @default "text" */
  logFormat: LogFormat;
  /** Longest a graceful shutdown waits for the last commit. @default 30000 */
  shutdownTimeoutMs: number;
  /** Distinct laws with series of their own in the per-law metrics; the rest share `law_id="other"`. @default 1000 */
  metricsMaxLaws: number;
}

/** A configuration value that breaks its rule; the message names the variable. */
export class ConfigError extends Error {
  /** The environment variable at fault. */
  readonly variable: string;
  constructor(variable: string, rule: string, value: string) {
    super(
      `Invalid ${variable}: ${rule}, current value is ${JSON.stringify(value)}`,
    );
    this.name = "ConfigError";
    this.variable = variable;
  }
}

/** Reads one environment variable; `undefined` when unset. */
export type EnvReader = (name: string) => string | undefined;

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
  const raw = (name: VariableName): string | undefined => {
    const value = read(name);
    return value === undefined || value.trim() === "" ? (VARIABLES[name] as Variable).default : value.trim();
  };
  const text = (name: VariableName): string => raw(name) ?? "";
  const optional = (name: VariableName) => raw(name);

  const integer = (name: VariableName, min: number, max: number): number => {
    const value = text(name);
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) {
      throw new ConfigError(name, `must be an integer from ${min} to ${max}`, value);
    }
    return n;
  };
  const seconds = (name: VariableName, min: number, max: number): number => {
    const value = text(name);
    const n = Number(value);
    if (!/^\d+(\.\d+)?$/.test(value) || n < min || n > max) {
      throw new ConfigError(
        name,
        `must be a number of seconds from ${min} to ${max}`,
        value,
      );
    }
    return Math.round(n * 1000);
  };
  const oneOf = <T extends string>(
    name: VariableName,
    allowed: readonly T[],
    normalize: (s: string) => string = (s) => s.toLowerCase(),
  ): T => {
    const value = text(name);
    const n = normalize(value) as T;
    if (!allowed.includes(n)) {
      throw new ConfigError(name, `must be one of ${allowed.join(", ")}`, value);
    }
    return n;
  };
  const boolean = (name: VariableName): boolean =>
    ["true", "1", "yes", "on"].includes(
      oneOf(name, ["true", "false", "1", "0", "yes", "no", "on", "off"]),
    );
  const url = (name: VariableName, schemes: string[]): string | undefined => {
    const value = optional(name);
    if (value === undefined) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      throw new ConfigError(name, `must be a URL (${schemes.join(" or ")})`, redactUrl(value));
    }
    if (!schemes.includes(parsed.protocol.slice(0, -1))) {
      throw new ConfigError(
        name,
        `must start with ${schemes.map((s) => s + "://").join(" or ")}`,
        redactUrl(value),
      );
    }
    return value;
  };
  const name = (variable: VariableName, max: number): string => {
    const value = text(variable);
    if (value.length === 0 || value.length > max) {
      throw new ConfigError(variable, `must be 1 to ${max} characters`, value);
    }
    return value;
  };

  const origins = (variable: VariableName): string[] => {
    const list = parseOrigins(optional(variable) ?? "");
    if (list === undefined) {
      throw new ConfigError(
        variable,
        "must be * or origins like https://results.example.org, comma-separated",
        text(variable),
      );
    }
    return list;
  };

  const tls = boolean("RABBITMQ_TLS");
  const rabbitmqUrl = url("RABBITMQ_URL", ["amqp", "amqps"]) ?? buildUrl(
    tls ? "amqps" : "amqp",
    text("RABBITMQ_USER"),
    text("RABBITMQ_PASSWORD"),
    text("RABBITMQ_HOST"),
    integer("RABBITMQ_PORT", 1, 65535),
    text("RABBITMQ_VHOST"),
  );
  const databaseUrl = url("DATABASE_URL", ["postgres", "postgresql"]) ??
    buildUrl(
      "postgres",
      text("POSTGRES_USER"),
      text("POSTGRES_PASSWORD"),
      text("POSTGRES_HOST"),
      integer("POSTGRES_PORT", 1, 65535),
      name("POSTGRES_DB", 63),
    );

  const config: Config = {
    rabbitmqUrl,
    rabbitmqQueue: name("RABBITMQ_QUEUE", 255),
    rabbitmqPrefetchCount: integer("RABBITMQ_PREFETCH_COUNT", 1, 65535),
    rabbitmqQueueType: oneOf("RABBITMQ_QUEUE_TYPE", ["classic", "quorum"]),
    rabbitmqDeliveryLimit: integer("RABBITMQ_DELIVERY_LIMIT", 1, 1_000_000),
    rabbitmqCaFile: optional("RABBITMQ_CA_FILE"),
    databaseUrl,
    postgresMinConnections: integer("POSTGRES_MIN_CONNECTIONS", 0, 1000),
    postgresMaxConnections: integer("POSTGRES_MAX_CONNECTIONS", 1, 1000),
    postgresSslMode: oneOf("POSTGRES_SSLMODE", [
      "disable",
      "prefer",
      "require",
      "verify-full",
    ]),
    postgresSslRootCert: optional("POSTGRES_SSLROOTCERT"),
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
    logLevel: oneOf(
      "LOG_LEVEL",
      ["DEBUG", "INFO", "WARNING", "ERROR"],
      (s) => s.toUpperCase() === "WARN" ? "WARNING" : s.toUpperCase(),
    ),
    logFormat: oneOf("LOG_FORMAT", ["text", "json"]),
    shutdownTimeoutMs: seconds("SHUTDOWN_TIMEOUT_SECONDS", 0, 3600),
    metricsMaxLaws: integer("METRICS_MAX_LAWS", 1, 100_000),
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
