/**
 * The database probe: `select 1` every second on a connection of its own, so that readiness knows within seconds
 * whether PostgreSQL answers, whether or not votes are flowing. A commit says so only when there is one to make,
 * and the pool's connections may all be busy committing: the probe neither waits behind them nor delays them.
 *
 * A probe that gets no answer within its deadline (a partition, a server that accepts and never answers) counts as
 * a failure, and its connection is dropped so that the next probe starts afresh. Only a change is reported (the
 * database answering again, or failing in another way).
 *
 * It does not decide what a failure means for the pipeline (`../pipeline/state.ts`, `../pipeline/readiness.ts`).
 *
 * @example
 * ```ts
 * import { DatabaseProbe } from "./probe.ts";
 * const probe = new DatabaseProbe(() => connectDatabase({ ...config, postgresMaxConnections: 1 }), {
 *   onChange: (failure) => console.log(failure ?? "PostgreSQL answers"),
 * });
 * probe.start();
 * await probe.stop();
 * ```
 *
 * @module
 */

import { withTimeout } from "../timeout.ts";
import type { Sql } from "./pool.ts";

/** What `pg_stat_activity` shows for the probe's connection. */
export const PROBE_APPLICATION_NAME = "vote-aggregator-probe";
/** Milliseconds between the end of one probe and the start of the next. */
export const PROBE_INTERVAL_MS = 1000;
/** Longest a probe waits for `select 1` (a connection included) before it counts as a failure. */
export const PROBE_TIMEOUT_MS = 1500;

/** Options of {@link DatabaseProbe}. */
export interface DatabaseProbeOptions {
  /** Told when the database stops answering (why; again when the reason changes) or answers again (`undefined`). */
  onChange: (failure: string | undefined) => void;
  /** @default PROBE_INTERVAL_MS */
  intervalMs?: number;
  /** @default PROBE_TIMEOUT_MS */
  timeoutMs?: number;
}

/** Probes the database; see the module documentation. */
export class DatabaseProbe {
  readonly #connect: () => Sql;
  readonly #options: DatabaseProbeOptions;
  #client: Sql | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  /** The last failure; `undefined` while the database answers (and before the first probe). */
  #failure: string | undefined;

  /** @param connect opens the probe's own connection (a pool of one), again after each failure */
  constructor(connect: () => Sql, options: DatabaseProbeOptions) {
    this.#connect = connect;
    this.#options = options;
  }

  /** Why the database did not answer the last probe; `undefined` when it did. */
  get failure(): string | undefined {
    return this.#failure;
  }

  /** Probes now, then every interval until {@link stop}. */
  start(): void {
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Stops probing and closes the probe's connection. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
    await this.#drop();
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.#probe().finally(() => this.#schedule(this.#options.intervalMs ?? PROBE_INTERVAL_MS));
    }, ms);
  }

  async #probe(): Promise<void> {
    const timeoutMs = this.#options.timeoutMs ?? PROBE_TIMEOUT_MS;
    this.#client ??= this.#connect();
    let failure: string | undefined;
    try {
      await withTimeout(this.#client`select 1`, timeoutMs, `no answer to select 1 within ${timeoutMs} ms`);
    } catch (error) {
      failure = (error as Error).message;
      await this.#drop();
    }
    if (this.#stopped || failure === this.#failure) return;
    this.#failure = failure;
    this.#options.onChange(failure);
  }

  async #drop(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    await client?.end({ timeout: 0 }).catch(() => {});
  }
}
