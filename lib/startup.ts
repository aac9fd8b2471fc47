/**
 * Start-up's network steps under a deadline and a signal: the database is
 * reached (created when missing) with every attempt bounded by
 * `CONNECT_TIMEOUT_SECONDS`, a failure that may heal (refused, reset, timed
 * out) logged with what failed and retried with backoff ({@link ./retry.ts}),
 * and all of it abandoned as soon as the stop signal aborts. The broker's
 * first connection is the same policy in amqplib's recovery
 * (`broker/connect.ts`: {@link STARTUP_ATTEMPTS} attempts).
 *
 * It does not own the pool or the migrations (`database.ts`), nor what runs
 * after start-up (`service.ts`).
 *
 * @module
 */

import postgres from "postgres";
import type { Config } from "./config/config.ts";
import { connectDatabase, ensureDatabase, type Sql, warmUp } from "./database/pool.ts";
import { getLogger } from "./log.ts";
import { usePreparedStatements } from "./database/pooler.ts";
import { AbortedError, retry, RetryError, type RetryOptions } from "./retry.ts";
import { TimeoutError } from "./timeout.ts";
import { redactUrl } from "./config/url.ts";

const log = getLogger("startup");

/** Attempts at a first connection (the database's, the broker's) before the start fails. */
export const STARTUP_ATTEMPTS = 6;
/** Backoff between them: 0.5 s doubling, half of it random, at most 30 s. */
export const STARTUP_BACKOFF = { minDelayMs: 500, multiplier: 2, maxDelayMs: 30_000, jitter: 0.5 } as const;

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
 * Start-up's retry of a first connection to the database at `url`: {@link STARTUP_ATTEMPTS} attempts with
 * {@link STARTUP_BACKOFF}, only while it fails to connect, each failure logged with what failed.
 */
export function databaseRetry(url: string, connectTimeoutMs: number, signal?: AbortSignal): RetryOptions {
  return {
    ...STARTUP_BACKOFF,
    maxAttempts: STARTUP_ATTEMPTS,
    signal,
    shouldRetry: isConnectionFailure,
    onRetry: (error, attempt, delayMs) =>
      log.warn("Cannot connect to PostgreSQL at {url}: {error}; retrying in {delayMs} ms (attempt {attempt})", {
        url: redactUrl(url),
        error: describeConnectionFailure(error, connectTimeoutMs),
        delayMs: Math.round(delayMs),
        attempt,
      }),
  };
}

/**
 * The pool, with `POSTGRES_MIN_CONNECTIONS` connections open (the database created first when missing).
 *
 * @throws {AbortedError} when `signal` aborts first (the pool is closed)
 * @throws after {@link STARTUP_ATTEMPTS} connection failures, or at once on a refusal; the message says what to check
 */
export async function openDatabase(config: Config, signal?: AbortSignal): Promise<Sql> {
  const url = redactUrl(config.databaseUrl);
  // Opened once the server answers: whether it may use named prepared statements is asked of it first.
  let sql: Sql | undefined;
  try {
    await retry(async () => {
      await ensureDatabase(config);
      sql ??= connectDatabase(config, { prepare: await usePreparedStatements(config) });
      await warmUp(sql, config.postgresMinConnections);
    }, databaseRetry(config.databaseUrl, config.connectTimeoutMs, signal));
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
