/**
 * The hosts of a multi-host `DATABASE_URL`: which one the pool's next connection attempt goes to, and how
 * long it waits, as `../broker/nodes.ts` does for the broker's nodes. Attempts go to the host that last
 * worked; a failed one moves to the next host at once, and only when every host has failed in a row does
 * a backoff apply (round 1, 2, … as `../retry.ts`'s attempts 1, 2, …: 0.5 s doubling, half of it random,
 * at most 5 s, so that counting resumes within seconds of a promotion however long the failover took).
 *
 * It is postgres.js's `socket` option: postgres.js asks it for each new connection's socket, then runs
 * the handshake and its `target_session_attrs` check over it (a standby is closed at once: a failed
 * attempt). postgres.js's own rotation over a host list has no pause between rounds: while no host takes
 * writes it opened hundreds of connections a second to the standby. postgres.js still keeps an attempt
 * that failed to itself while it is given more than one host (`pool.ts`), so a commit waits for a writable
 * server instead of failing at each host.
 *
 * An attempt counts as failed when its socket errs or closes within the connect timeout (refused, reset,
 * timed out, a standby turned away), and as a success once it has stayed open past it.
 *
 * @module
 */

import net from "node:net";
import { backoffDelay } from "../retry.ts";
import type { DatabaseHost } from "../config/url.ts";
import { delay } from "../timeout.ts";

/** The hosts in the order they are tried; see the module documentation. */
export class DatabaseHosts {
  readonly hosts: readonly DatabaseHost[];
  readonly #settleMs: number;
  readonly #roundDelay: (round: number) => number;
  #index = 0;
  /** Attempts failed in a row since the last one that held. */
  #failures = 0;

  /**
   * @param hosts two or more hosts (validated by the configuration)
   * @param settleMs how long a connection must stay open to count as a success (the connect timeout and a margin)
   * @param roundDelay the wait after `round` full rounds failed @default 0.5 s doubling to 5 s, half random
   */
  constructor(
    hosts: readonly DatabaseHost[],
    settleMs: number,
    roundDelay: (round: number) => number = (round) =>
      backoffDelay(round, { minDelayMs: 500, maxDelayMs: 5_000, jitter: 0.5 }),
  ) {
    this.hosts = hosts;
    this.#settleMs = settleMs;
    this.#roundDelay = roundDelay;
  }

  /** The host the next attempt goes to. */
  get current(): DatabaseHost {
    return this.hosts[this.#index];
  }

  /** The wait before the next attempt: 0 inside a round, the round's backoff once every host failed in a row. */
  get delayMs(): number {
    const n = this.hosts.length;
    return this.#failures > 0 && this.#failures % n === 0 ? this.#roundDelay(this.#failures / n) : 0;
  }

  /** postgres.js's `socket` option: waits {@link delayMs}, then connects to {@link current}. */
  readonly socket = async (): Promise<net.Socket> => {
    const wait = this.delayMs;
    if (wait > 0) await delay(wait);
    const host = this.current;
    const socket = net.connect({ host: host.host, port: host.port });
    // postgres.js reads these for TLS's server name and its error messages.
    Object.assign(socket, { host: host.host, port: host.port });
    const openedAt = performance.now();
    let failed = false;
    const held = setTimeout(() => this.#failures = 0, this.#settleMs);
    Deno.unrefTimer(held);
    const fail = () => {
      if (failed) return;
      failed = true;
      clearTimeout(held);
      this.#failed(host);
    };
    socket.once("error", fail);
    socket.once("close", () => performance.now() - openedAt < this.#settleMs ? fail() : clearTimeout(held));
    return socket;
  };

  #failed(host: DatabaseHost): void {
    this.#failures += 1;
    // Concurrent attempts at one host that fail together move on once.
    if (this.current === host) this.#index = (this.#index + 1) % this.hosts.length;
  }
}
