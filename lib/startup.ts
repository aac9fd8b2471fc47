/**
 * Start-up's network steps under a signal: the database is reached (created
 * when missing) with every attempt bounded by `CONNECT_TIMEOUT_SECONDS`, a
 * failure that may heal (refused, reset, timed out) logged with what failed and
 * the next delay, and retried with backoff ({@link ./retry.ts}) for as long as
 * it takes — a database that starts beside the service is waited for — and all
 * of it abandoned as soon as the signal aborts (a stop, or
 * `STARTUP_TIMEOUT_SECONDS`). The broker's first connection is the same policy
 * in amqplib's recovery (`broker/connect.ts`).
 *
 * Until the pipeline runs, {@link StartupProgress} answers for it on the control
 * plane: `/healthz` is 200, `/readyz` 503 naming what start-up waits for.
 *
 * It does not own the pool or the migrations (`database/`), nor what runs
 * after start-up (`service.ts`).
 *
 * @module
 */

import postgres from "postgres";
import type { Config } from "./config/config.ts";
import { connectDatabase, ensureDatabase, type Sql, warmUp } from "./database/pool.ts";
import { getLogger } from "./log.ts";
import { usePreparedStatements } from "./database/pooler.ts";
import { AbortedError, RECONNECT_BACKOFF, retry, RetryError, type RetryOptions } from "./retry.ts";
import { TimeoutError } from "./timeout.ts";
import type { Readiness } from "./pipeline/readiness.ts";
import { type Status, statusOf } from "./pipeline/status.ts";
import { redactUrl } from "./config/url.ts";

const log = getLogger("startup");

/** Error codes of a connection that failed in a way that may heal: refused, reset, timed out, unresolved for now. */
const TRANSIENT_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "EAI_AGAIN",
  "ENOTFOUND",
  // postgres.js's own
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
]);

/**
 * True for a failure to reach a server that may heal by itself: the connection refused, reset or
 * timed out. Not for a server's answer (a wrong password, a missing database: a `PostgresError`),
 * nor for a certificate that is not trusted: those fail the start at once.
 */
export function isConnectionFailure(error: unknown): boolean {
  if (error instanceof postgres.PostgresError) return false;
  if (error instanceof TimeoutError) return true;
  return TRANSIENT_CODES.has(String((error as { code?: unknown })?.code));
}

/** A connection failure said as what it is; a timeout names the step and the variable that bounds it. */
export function describeConnectionFailure(error: unknown, timeoutMs: number): string {
  if ((error as { code?: unknown })?.code === "CONNECT_TIMEOUT") {
    return `timed out after ${timeoutMs} ms waiting for the TCP connection, TLS or PostgreSQL's answer (CONNECT_TIMEOUT_SECONDS)`;
  }
  return (error as Error)?.message ?? String(error);
}

/**
 * Start-up's retry of a first connection to the database at `url`: {@link RECONNECT_BACKOFF} for as long as it
 * fails to connect (until `signal` aborts), each failure logged with what failed and the next delay.
 *
 * @param onFailure told of each failure that is retried, said as what it is
 */
export function databaseRetry(
  url: string,
  connectTimeoutMs: number,
  signal?: AbortSignal,
  onFailure?: (failure: string) => void,
): RetryOptions {
  return {
    ...RECONNECT_BACKOFF,
    maxAttempts: Infinity,
    signal,
    shouldRetry: isConnectionFailure,
    onRetry: (error, attempt, delayMs) => {
      const failure = describeConnectionFailure(error, connectTimeoutMs);
      onFailure?.(failure);
      log.warn("Cannot connect to PostgreSQL at {url}: {error}; retrying in {delayMs} ms (attempt {attempt})", {
        url: redactUrl(url),
        error: failure,
        delayMs: Math.round(delayMs),
        attempt,
      });
    },
  };
}

/**
 * The pool, with `POSTGRES_MIN_CONNECTIONS` connections open (the database created first when missing); a
 * connection failure that may heal is retried until `signal` aborts.
 *
 * @param onFailure told of each failure that is retried, said as what it is
 * @throws {AbortedError} when `signal` aborts first (the pool is closed)
 * @throws at once on a refusal (a wrong password, an untrusted certificate); the message says what to check
 */
export async function openDatabase(
  config: Config,
  signal?: AbortSignal,
  onFailure?: (failure: string) => void,
): Promise<Sql> {
  const url = redactUrl(config.databaseUrl);
  // Opened once the server answers: whether it may use named prepared statements is asked of it first.
  let sql: Sql | undefined;
  try {
    await retry(async () => {
      await ensureDatabase(config);
      sql ??= connectDatabase(config, { prepare: await usePreparedStatements(config) });
      await warmUp(sql, config.postgresMinConnections);
    }, databaseRetry(config.databaseUrl, config.connectTimeoutMs, signal, onFailure));
    return sql!;
  } catch (error) {
    await sql?.end({ timeout: 0 }).catch(() => {});
    if (error instanceof AbortedError) throw error;
    const cause = error instanceof RetryError ? error.cause : error;
    // A migration or creation error carries its own message; a failure to connect gets what to check.
    if ((cause as { code?: unknown })?.code === undefined) throw error;
    const attempts = error instanceof RetryError ? ` after ${error.attempts} attempt(s)` : "";
    throw new Error(
      `Cannot connect to PostgreSQL at ${url}${attempts}: ${
        describeConnectionFailure(cause, config.connectTimeoutMs)
      }. ` +
        "Is it running, does the database exist, and are POSTGRES_HOST/POSTGRES_DB/POSTGRES_USER right?",
      { cause },
    );
  }
}

/** Start-up's end: a stop signal, or `STARTUP_TIMEOUT_SECONDS` (0: none). */
export class StartupDeadline {
  /** Aborts on the stop signal or at the timeout. */
  readonly signal: AbortSignal;
  readonly #timeoutMs: number;
  readonly #stop: AbortSignal | undefined;

  constructor(timeoutMs: number, stop: AbortSignal | undefined) {
    this.#timeoutMs = timeoutMs;
    this.#stop = stop;
    const signals = [stop, timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined];
    this.signal = AbortSignal.any(signals.filter((s) => s !== undefined));
  }

  /**
   * `error` as start-up should fail with it: an abandonment at the timeout becomes an error naming the variable and
   * what start-up was waiting for (`waitingFor()`); a stop's abandonment, and any other error, stay what they are.
   */
  explain(error: unknown, waitingFor: () => string | null): unknown {
    if (!(error instanceof AbortedError) || !this.signal.aborted || this.#stop?.aborted) return error;
    return new Error(
      `Start-up did not finish within ${this.#timeoutMs / 1000} s (STARTUP_TIMEOUT_SECONDS): ${waitingFor()}`,
      { cause: error },
    );
  }
}

/** A route that needs the pipeline (`/flush`, `/pause`, `/resume`) was asked for before it runs. */
export class StartingError extends Error {
  constructor(action: string, reason: string) {
    super(`Cannot ${action} while starting (${reason})`);
    this.name = "StartingError";
  }
}

/** The part start-up waits for. */
export type StartupPart = "database" | "broker";

/**
 * What start-up waits for, as the control plane reports it until the pipeline runs: not ready, state `starting`,
 * the reason naming the part, what start-up is doing with it, and its last failure.
 */
export class StartupProgress {
  #part: StartupPart = "database";
  #detail = "connecting to PostgreSQL";

  /** Start-up now waits for `part`: `detail` says what it does, or why its last attempt failed. */
  waiting(part: StartupPart, detail: string): void {
    this.#part = part;
    this.#detail = detail;
  }

  readonly state = "starting";

  readiness(): Readiness {
    const reason = `${this.#part}: starting: ${this.#detail}`;
    const database = this.#part === "database" ? `down: starting: ${this.#detail}` : "up";
    return { ready: false, state: "starting", reason, broker: "down", database };
  }

  status(): Status {
    return statusOf({
      readiness: this.readiness(),
      broker: { connected: false, consuming: false },
      openBatch: { messages: 0, openedAt: 0 },
      inflightBatches: 0,
      lastCommitAt: null,
      databaseFailing: false,
      totals: { batches: 0, messages: 0, counted: 0, duplicates: 0, redelivered: 0, deadLettered: 0 },
    });
  }

  flush(): Promise<number> {
    return Promise.reject(new StartingError("flush", this.readiness().reason!));
  }

  pause(): Promise<{ flushed: number; committed: boolean }> {
    return Promise.reject(new StartingError("pause", this.readiness().reason!));
  }

  resume(): Promise<void> {
    return Promise.reject(new StartingError("resume", this.readiness().reason!));
  }

  /** Nothing to bring up to date: the gauges keep their initial values until the pipeline runs. */
  refreshGauges(): void {}
}
