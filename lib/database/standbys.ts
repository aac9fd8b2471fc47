/**
 * Standbys: acknowledgements that survive a failover (`POSTGRES_MIN_STANDBYS=N`), and the warning at
 * start when nothing protects them.
 *
 * With asynchronous replication a commit returns before any standby has the WAL: if the primary dies
 * then and a standby is promoted, the batch is gone from the database while the broker, told it was
 * committed, has dropped it. {@link StandbyWaiter} holds each committed batch until N streaming
 * standbys have flushed WAL at or past its commit, as the primary reports it in `pg_stat_replication`
 * (read through `standby_flush_lsns()`, sql/007_standby_flush.sql). The commit's position is the
 * primary's `pg_current_wal_lsn()` read after the commit returned, on the same server (its
 * `pg_postmaster_start_time()` recorded in the commit's statement): one poll serves every batch
 * waiting, and is repeated every few milliseconds only while some batch waits. A poll that reaches
 * another server (a standby promoted since, the same one restarted) or none fails the wait: the
 * writer then commits the batch again, which counts only what the server does not hold yet.
 *
 * While fewer than N standbys keep up, batches wait (unacknowledged, safe in the queue), and
 * {@link StandbyWaiter.waiting} says why for `/readyz`.
 *
 * @example
 * ```ts
 * import { StandbyWaiter } from "./standbys.ts";
 * const standbys = new StandbyWaiter(sql, { minStandbys: 1 });
 * await standbys.flushed(committed.server); // then acknowledge
 * ```
 *
 * @module
 */

import { delay } from "../timeout.ts";
import { getLogger } from "../log.ts";
import type { Sql } from "./pool.ts";

const log = getLogger("database");

/** Options of {@link StandbyWaiter}. */
export interface StandbyWaiterOptions {
  /** Standbys that must have flushed a commit before it is acknowledged (1 or more). */
  minStandbys: number;
  /** Pause between two polls while batches wait. @default 5 */
  pollMs?: number;
  /** How long a batch may wait before readiness reports it. @default 1000 */
  graceMs?: number;
  /** Told each poll's lag of every streaming standby (WAL bytes not flushed yet). */
  onLag?: (lags: { standby: string; bytes: number }[]) => void;
}

/** The wait for standbys failed: the server changed or could not be asked. The batch must be committed again. */
export class StandbyWaitError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StandbyWaitError";
  }
}

interface Waiter {
  server: string;
  since: number;
  /** The primary's WAL position once a poll after the commit read it. */
  target?: bigint;
  /** A poll after the commit reached another server: whether that one has the batch is unknown. */
  lost?: boolean;
  resolve: () => void;
  reject: (error: Error) => void;
}

interface Poll {
  server: string;
  current: string;
  standbys: { standby: string; flushed: string }[];
}

/** Holds batches until enough standbys flushed them; see the module documentation. */
export class StandbyWaiter {
  readonly #sql: Sql;
  readonly #min: number;
  readonly #pollMs: number;
  readonly #graceMs: number;
  readonly #onLag: StandbyWaiterOptions["onLag"];
  #waiters: Waiter[] = [];
  #polling = false;
  #last: { streaming: number; lag: bigint } = { streaming: 0, lag: 0n };

  constructor(sql: Sql, options: StandbyWaiterOptions) {
    this.#sql = sql;
    this.#min = options.minStandbys;
    this.#pollMs = options.pollMs ?? 5;
    this.#graceMs = options.graceMs ?? 1000;
    this.#onLag = options.onLag;
  }

  /**
   * Resolves once `minStandbys` standbys of `server` flushed everything committed before the call.
   *
   * @param server the commit's `pg_postmaster_start_time()` (`CountedVotes.server`)
   * @throws {StandbyWaitError} when a poll reaches another server or fails
   */
  flushed(server: string): Promise<void> {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#waiters.push({ server, since: performance.now(), resolve, reject });
    if (!this.#polling) void this.#poll();
    return promise;
  }

  /** Why acknowledgements wait, once the oldest waiting batch has waited past the grace; else undefined. */
  get waiting(): string | undefined {
    const oldest = this.#waiters[0];
    if (oldest === undefined || performance.now() - oldest.since < this.#graceMs) return undefined;
    const seconds = ((performance.now() - oldest.since) / 1000).toFixed(1);
    return `a commit has waited ${seconds} s for ${this.#min} standby(s) to flush it (POSTGRES_MIN_STANDBYS); ` +
      `${this.#last.streaming} streaming, the furthest needed ${this.#last.lag} bytes behind: nothing more is acknowledged`;
  }

  async #poll(): Promise<void> {
    this.#polling = true;
    try {
      while (this.#waiters.length > 0) {
        const asked = this.#waiters.filter((w) => w.target === undefined);
        let poll: Poll;
        try {
          [poll] = await this.#sql<Poll[]>`
            select pg_postmaster_start_time()::text as server,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text as current,
                   coalesce((select json_agg(json_build_object(
                                'standby', standby, 'flushed', pg_wal_lsn_diff(flushed, '0/0')::text))
                             from standby_flush_lsns()), '[]') as standbys`;
        } catch (error) {
          const failed = new StandbyWaitError(
            `cannot ask the primary how far its standbys are (${(error as Error).message})`,
            { cause: error },
          );
          this.#settle((w) => w.reject(failed));
          continue;
        }
        const current = lsn(poll.current);
        for (const waiter of asked) {
          if (waiter.server === poll.server) waiter.target = current;
          else waiter.lost = true;
        }
        const flushed = poll.standbys.map((s) => lsn(s.flushed)).sort((a, b) => a > b ? -1 : a < b ? 1 : 0);
        const needed = flushed.length >= this.#min ? flushed[this.#min - 1] : -1n;
        this.#last = { streaming: flushed.length, lag: needed < 0n ? current : current - needed };
        this.#onLag?.(poll.standbys.map((s) => ({ standby: s.standby, bytes: Number(current - lsn(s.flushed)) })));
        this.#settle((w) => {
          if (w.lost) {
            w.reject(new StandbyWaitError("another PostgreSQL server answers than the one that committed the batch"));
          } else if (w.target !== undefined && w.target <= needed) w.resolve();
          else return false;
          return true;
        });
        if (this.#waiters.length > 0) await delay(this.#pollMs);
      }
    } catch (error) {
      log.error("Waiting for standbys failed: {error}", { error });
      this.#settle((w) => w.reject(error as Error));
    } finally {
      this.#polling = false;
    }
  }

  /** Calls `settle` on each waiter; those for which it returns anything but false are done. */
  #settle(settle: (waiter: Waiter) => boolean | void): void {
    this.#waiters = this.#waiters.filter((w) => settle(w) === false);
  }
}

/** A WAL position as `pg_wal_lsn_diff(…, '0/0')` writes it (a numeric), in bytes. */
function lsn(numeric: string): bigint {
  return BigInt(numeric.split(".")[0]);
}

/**
 * The warning of a primary whose acknowledged commits a failover can lose: it has streaming standbys,
 * but neither synchronous replication (`synchronous_standby_names` with `synchronous_commit` at `on`
 * or `remote_apply`) nor `POSTGRES_MIN_STANDBYS` holds acknowledgements until a standby
 * has the commit. `undefined` when protected, or when there is no standby to fail over to.
 */
export async function unprotectedReplication(sql: Sql, minStandbys: number): Promise<string | undefined> {
  if (minStandbys > 0) return undefined;
  const [row] = await sql<{ standbys: number; names: string; commit: string; recovery: boolean }[]>`
    select (select count(*) from pg_stat_replication)::int as standbys,
           current_setting('synchronous_standby_names') as names,
           current_setting('synchronous_commit') as commit,
           pg_is_in_recovery() as recovery`;
  if (row.recovery || row.standbys === 0) return undefined;
  const synchronous = row.names.trim() !== "" && ["on", "remote_apply"].includes(row.commit);
  if (synchronous) return undefined;
  return `PostgreSQL streams to ${row.standbys} standby(s) asynchronously: after a failover to one of them, ` +
    "votes already acknowledged to RabbitMQ can be missing. Set POSTGRES_MIN_STANDBYS=1 (acknowledge only what a " +
    "standby has flushed) or make replication synchronous (synchronous_standby_names, synchronous_commit=on)";
}
