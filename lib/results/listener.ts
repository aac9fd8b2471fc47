/**
 * The results connection: one PostgreSQL connection that LISTENs on
 * `vote_results_changed`, and a small pool that re-reads the laws a
 * notification names, both outside the write pool (their own `postgres()`
 * instance, `application_name` `vote-aggregator-results`), so a crowd of
 * results readers never takes a connection from counting. Both connect to
 * `RESULTS_DATABASE_URL` when it is set (a direct session, for `LISTEN`, beside
 * a write pool behind a transaction pooler), else to `DATABASE_URL`. It owns keeping the
 * hub equal to the table: at start and after every lost listening connection
 * it listens again (backoff from lib/retry.ts, until it succeeds) and then
 * resynchronises from the whole table, so a change committed while it was
 * away is still sent. What a notification carries and how results are read is
 * {@link ./store.ts}'s; fanning out is {@link ./hub.ts}'s.
 *
 * A results-only instance may read a streaming standby, where `LISTEN` is
 * refused (notifications are not replicated): with `pollMs` it opens no
 * listening connection and resynchronises from the table that often instead,
 * which works on a primary and a standby alike.
 *
 * Not postgres.js's `sql.listen(channel, fn, onlisten)`: after a lost
 * connection it listens again once and drops the listener for good if that
 * fails (src/index.js, `onclose`), e.g. while the database restarts. Here the
 * connection's own `onnotify` and `onclose` hooks drive the same steps with a
 * retry that does not give up.
 *
 * @module
 */

import type postgres from "postgres";
import type { Config } from "../config/config.ts";
import { connectDatabase, type Sql } from "../database/pool.ts";
import { getLogger } from "../log.ts";
import { backoffDelay, RECONNECT_BACKOFF } from "../retry.ts";
import { delay } from "../timeout.ts";
import type { ResultsHub } from "./hub.ts";
import { parseNotification, readResults, RESULTS_CHANNEL } from "./store.ts";

const log = getLogger("results");

/** `application_name` of the results readers' connections (in `pg_stat_activity`). */
export const RESULTS_APPLICATION_NAME = "vote-aggregator-results";
/** `application_name` of the listening connection. */
export const LISTENER_APPLICATION_NAME = "vote-aggregator-listener";

/** Options of {@link ResultsListener}. */
export interface ListenerOptions {
  config:
    & Pick<Config, "databaseUrl" | "postgresSslMode" | "postgresSslRootCert" | "retryDelayMs">
    & Partial<Pick<Config, "resultsDatabaseUrl">>;
  hub: ResultsHub;
  /** Connections for reading results (API requests and re-reads), besides the listening one. @default 2 */
  readers?: number;
  /** Read the whole table this often instead of listening (a standby cannot `LISTEN`). @default undefined (listen) */
  pollMs?: number;
  /** Every transaction read-only, whatever the role may do (a results-only instance). @default false */
  readOnly?: boolean;
}

/** Keeps a {@link ResultsHub} equal to `vote_results`. */
export class ResultsListener {
  /** For reading results: the API's requests and the re-reads; not the write pool. */
  readonly sql: Sql;
  readonly #listener: Sql | undefined;
  readonly #pollMs: number | undefined;
  #poller: ReturnType<typeof setInterval> | undefined;
  readonly #hub: ResultsHub;
  readonly #retryDelayMs: number;
  /** Laws named by notifications, not yet re-read: law → newest version named. */
  #wanted = new Map<string, number>();
  #reading: Promise<void> | undefined;
  #resync = false;
  #ending = false;
  #listening: Promise<void> | undefined;
  #lostMeanwhile = false;
  readonly #firstFailure = Promise.withResolvers<unknown>();
  /** Times it listened (1 at start, +1 per reconnect). */
  listens = 0;
  /** `performance.now()` of the last read of the table that succeeded (for a results-only instance's readiness). */
  lastReadAt: number | undefined;
  /** The last read's failure, until a read succeeds. */
  lastReadError: string | undefined;

  constructor(options: ListenerOptions) {
    this.#hub = options.hub;
    this.#retryDelayMs = Math.max(100, options.config.retryDelayMs);
    // RESULTS_DATABASE_URL when set: a session of its own for LISTEN, beside a write pool behind a transaction pooler.
    const { resultsDatabaseUrl, databaseUrl } = options.config;
    const settings = {
      ...options.config,
      databaseUrl: resultsDatabaseUrl ?? databaseUrl,
      postgresMaxConnections: options.readers ?? 2,
    };
    // Unnamed statements (prepare: false), and so no plan_cache_mode at startup: the results' few reads need
    // neither, and they then work through a transaction pooler (PgBouncer), which refuses that parameter.
    this.sql = connectDatabase(settings, {
      applicationName: RESULTS_APPLICATION_NAME,
      prepare: false,
      readOnly: options.readOnly,
    });
    // postgres.js reads onnotify and onclose (src/index.js, parseOptions) but its types omit them.
    const hooks = {
      max_lifetime: null,
      onnotify: (_channel: string, payload: string) => this.#notified(payload),
      onclose: () => this.#lost(),
    } as postgres.Options<Record<string, postgres.PostgresType>>;
    this.#pollMs = options.pollMs;
    this.#listener = this.#pollMs !== undefined ? undefined : connectDatabase(
      { ...settings, postgresMaxConnections: 1 },
      { applicationName: LISTENER_APPLICATION_NAME, prepare: false, extra: hooks },
    );
  }

  /**
   * Listens and loads every law into the hub; resolves once both are done (retrying until they are). With
   * `pollMs`: loads every law (rejecting when it cannot), then again every `pollMs`.
   */
  async start(): Promise<void> {
    if (this.#pollMs === undefined) {
      return await (this.#listening ??= this.#listen().finally(() => this.#listening = undefined));
    }
    await this.resynchronise();
    const pollMs = this.#pollMs;
    this.#poller = setInterval(() => {
      const failing = this.lastReadError !== undefined;
      this.resynchronise().then(
        () => failing && log.info("Results: reading vote_results again"),
        (error) =>
          !failing && log.warn("Results: cannot read vote_results ({error}); trying every {ms} ms", {
            error: error.message,
            ms: pollMs,
          }),
      );
    }, pollMs);
  }

  /**
   * Settles with the error of the first attempt at listening that failed (a standby refuses `LISTEN` during
   * recovery): start-up goes on without waiting for {@link start}, which keeps trying.
   */
  get firstFailure(): Promise<unknown> {
    return this.#firstFailure.promise;
  }

  /** Reads the whole table into the hub now (at shutdown: the last commits are sent before streams end). */
  async resynchronise(): Promise<void> {
    this.#resync = true;
    await this.#drain();
  }

  /** Closes both connections. */
  async end(): Promise<void> {
    this.#ending = true;
    clearInterval(this.#poller);
    await this.#reading?.catch(() => {});
    await Promise.all([this.#listener?.end({ timeout: 1 }), this.sql.end({ timeout: 1 })]);
  }

  async #listen(): Promise<void> {
    for (let attempt = 1; !this.#ending;) {
      this.#lostMeanwhile = false;
      try {
        await this.#listener!.unsafe(`listen "${RESULTS_CHANNEL}"`);
        if (++this.listens > 1) {
          log.info("Results: listening again on {channel}; resynchronising", { channel: RESULTS_CHANNEL });
        }
        // Listening before reading: a change committed in between is read or notified, never neither.
        this.#resync = true;
        await this.#drain();
        if (!this.#lostMeanwhile) return;
        attempt = 1;
      } catch (error) {
        if (this.#ending) return;
        this.#firstFailure.resolve(error);
        const ms = backoffDelay(attempt++, {
          minDelayMs: this.#retryDelayMs,
          maxDelayMs: Math.max(this.#retryDelayMs, RECONNECT_BACKOFF.maxDelayMs),
          jitter: 0.2,
        });
        log.warn("Results: cannot listen on {channel} ({error}); again in {ms} ms", {
          channel: RESULTS_CHANNEL,
          error: (error as Error).message,
          ms: Math.round(ms),
        });
        await delay(ms);
      }
    }
  }

  #lost(): void {
    if (this.#ending) return;
    // Already listening again: that loop goes round once more.
    if (this.#listening) {
      this.#lostMeanwhile = true;
      return;
    }
    log.warn("Results: the listening connection was lost; reconnecting");
    this.#listening = this.#listen().finally(() => this.#listening = undefined);
  }

  #notified(payload: string): void {
    const changed = parseNotification(payload);
    if (changed === undefined) {
      log.warn("Results: ignored a notification on {channel} that is not this service's: {payload}", {
        channel: RESULTS_CHANNEL,
        payload: payload.slice(0, 200),
      });
      return;
    }
    for (const { lawId, version } of changed) {
      if (version > this.#hub.version(lawId) && version > (this.#wanted.get(lawId) ?? 0)) {
        this.#wanted.set(lawId, version);
      }
    }
    void this.#drain().catch(() => {});
  }

  /** One reader at a time: notifications that arrive while it reads are read together next. */
  #drain(): Promise<void> {
    if (this.#reading) return this.#reading;
    const reading = (async () => {
      while (!this.#ending && (this.#resync || this.#wanted.size > 0)) {
        const all = this.#resync;
        const laws = [...this.#wanted.keys()];
        this.#resync = false;
        this.#wanted.clear();
        try {
          const published = this.#hub.publish(await readResults(this.sql, all ? undefined : laws));
          this.lastReadAt = performance.now();
          this.lastReadError = undefined;
          // Polling reads the whole table each time: only a listener's resynchronisation is news.
          if (all && published.length && this.#pollMs === undefined) {
            log.info("Results: resynchronised {n} laws", { n: published.length });
          }
        } catch (error) {
          this.lastReadError = (error as Error).message;
          // Read again on the next notification or reconnect; a lost connection brings a resync.
          if (all) this.#resync = true;
          else for (const law of laws) this.#wanted.set(law, this.#wanted.get(law) ?? 1);
          throw error;
        }
      }
    })().finally(() => {
      // Asynchronous even when nothing was to read: a finally inside the body would run before the
      // assignment below and leave a settled promise as "reading", and no read would ever start again.
      if (this.#reading === reading) this.#reading = undefined;
    });
    this.#reading = reading;
    return reading;
  }
}
