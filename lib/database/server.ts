/**
 * The PostgreSQL server in use: which of the configured hosts (one, or several in libpq's multi-host
 * URL) the pool writes to now, as logs, `/status` (`database_host`) and the gauge
 * `postgres_connected_host{host}` show it. postgres.js picks the host (it tries the list in order and
 * keeps the first that is not a standby, `pool.ts`); this asks the server which one it is
 * (`inet_server_addr()`, `inet_server_port()`) and names it as the configuration does.
 *
 * It does not choose hosts nor retry anything.
 *
 * @example
 * ```ts
 * import { ServerInUse } from "./server.ts";
 * const server = new ServerInUse("postgres://u:p@db1:5432,db2:5432/votes", (host) => console.log(host));
 * await server.refresh(sql); // "db1:5432" when db1 is the primary
 * ```
 *
 * @module
 */

import { type DatabaseHost, hostPort, parseDatabaseUrl } from "../config/url.ts";
import { getLogger } from "../log.ts";
import type { Sql } from "./pool.ts";

const log = getLogger("database");

/** Tracks the host in use; see the module documentation. */
export class ServerInUse {
  /** Every configured host, in order. */
  readonly hosts: readonly DatabaseHost[];
  readonly #onChange: (host: string | undefined, previous: string | undefined) => void;
  #host: string | undefined;
  #asking: Promise<string | undefined> | undefined;

  /**
   * @param databaseUrl `DATABASE_URL` as configured (validated)
   * @param onChange told when the host in use changes (`undefined`: none answers)
   */
  constructor(
    databaseUrl: string,
    onChange: (host: string | undefined, previous: string | undefined) => void = () => {},
  ) {
    this.hosts = parseDatabaseUrl(databaseUrl)?.hosts ?? [];
    this.#onChange = onChange;
  }

  /** `host:port` of the server in use, as configured; `undefined` until known, or while none answers. */
  get host(): string | undefined {
    return this.#host;
  }

  /**
   * Asks the pool's server who it is; a failure means none answers now. One question at a time: while no
   * host takes writes the question waits for one, and asking again meanwhile would only open more connections.
   */
  refresh(sql: Sql): Promise<string | undefined> {
    return this.#asking ??= this.#ask(sql).finally(() => this.#asking = undefined);
  }

  async #ask(sql: Sql): Promise<string | undefined> {
    let host: string | undefined;
    try {
      const [row] = await sql<{ addr: string | null; port: number | null }[]>`
        select host(inet_server_addr()) as addr, inet_server_port() as port`;
      host = this.#named(row.addr, row.port);
    } catch {
      host = undefined;
    }
    this.#set(host);
    return host;
  }

  #set(host: string | undefined): void {
    const previous = this.#host;
    if (host === previous) return;
    this.#host = host;
    if (host !== undefined) log.info("Writing to PostgreSQL at {host}", { host });
    else log.warn("No PostgreSQL server answers at {hosts}", { hosts: this.hosts.map((h) => h.address).join(",") });
    this.#onChange(host, previous);
  }

  /** The configured host that is `addr:port`: the same address, else the only one on that port, else `addr:port` itself. */
  #named(addr: string | null, port: number | null): string {
    if (this.hosts.length === 1 || addr === null || port === null) return this.hosts[0]?.address ?? "unknown";
    const exact = this.hosts.find((h) => h.host === addr && h.port === port);
    const samePort = this.hosts.filter((h) => h.port === port);
    return exact?.address ?? (samePort.length === 1 ? samePort[0].address : hostPort(addr, port));
  }
}
