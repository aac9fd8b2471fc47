/**
 * A TCP proxy a test can cut and restore, to make the broker or the database
 * unreachable for one service process and nobody else, or slow (added latency).
 *
 * @module
 */

import { delay } from "../../lib/timeout.ts";

/** How a {@link TcpProxy} makes its target unreachable. */
export type CutMode =
  /** Connections refused (the port is closed): the database or broker host is up, the server is not. */
  | "refuse"
  /** Nothing answers: open connections stop moving data and new ones are accepted and never served (a partition). */
  | "stall";

/**
 * Forwards TCP connections from an ephemeral port on 127.0.0.1 to a target.
 * `cut()` makes the target unreachable for whoever uses the proxy, and for
 * nobody else; `restore()` forwards again.
 */
export class TcpProxy implements AsyncDisposable {
  #listener: Deno.TcpListener;
  readonly #port: number;
  #target: Deno.ConnectOptions;
  readonly #pairs = new Set<Pair>();
  #accepting: Promise<void>;
  #mode: CutMode | undefined;
  #disposed = false;
  #stalled: PromiseWithResolvers<void> = Promise.withResolvers();
  #latencyMs = 0;

  constructor(targetPort: number, targetHost = "127.0.0.1") {
    this.#target = { hostname: targetHost, port: targetPort };
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept(this.#listener);
  }

  /** The port to connect to instead of the target's. */
  get port(): number {
    return this.#port;
  }

  /** Connections being forwarded now. */
  get open(): number {
    return this.#pairs.size;
  }

  /** Local ports of the proxy's own connections to the target (what the target sees as its peers' ports). */
  get upstreamPorts(): number[] {
    return [...this.#pairs].flatMap((pair) => pair.upstream ? [(pair.upstream.localAddr as Deno.NetAddr).port] : []);
  }

  /** Milliseconds each chunk of data waits before it is forwarded, either way (0: none). */
  get latencyMs(): number {
    return this.#latencyMs;
  }

  /** Adds `ms` of latency to every chunk forwarded from now on, either way (a slow link or server); 0 removes it. */
  setLatency(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`Cannot set latency as 'ms' must be 0 or more: current value is ${ms}`);
    this.#latencyMs = ms;
  }

  /**
   * Sends new connections to another target (an address that moves: a virtual IP, a DNS name, a repointed
   * pooler); open ones stay where they are.
   */
  retarget(port: number, host = "127.0.0.1"): void {
    this.#target = { hostname: host, port };
  }

  /** Makes the target unreachable (see {@link CutMode}) until {@link restore}. */
  async cut(mode: CutMode = "refuse"): Promise<void> {
    if (this.#mode !== undefined) this.restore();
    this.#mode = mode;
    if (mode === "stall") return; // pumps wait on #stalled before each write
    if (mode === "refuse") {
      this.#listener.close();
      await this.#accepting;
    }
    await this.#dropAll();
  }

  /** Forwards again (stalled data flows on: nothing was lost, as after a partition heals). */
  restore(): void {
    const mode = this.#mode;
    this.#mode = undefined;
    if (mode === "refuse") {
      this.#listener = Deno.listen({ hostname: "127.0.0.1", port: this.#port });
      this.#accepting = this.#accept(this.#listener);
    }
    if (mode === "stall") {
      this.#stalled.resolve();
      this.#stalled = Promise.withResolvers();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#mode === "stall") this.restore();
    this.#disposed = true;
    try {
      this.#listener.close();
    } catch { /* closed */ }
    await this.#accepting;
    await this.#dropAll();
  }

  async #dropAll(): Promise<void> {
    const pairs = [...this.#pairs];
    for (const pair of pairs) closeQuietly(pair.client, pair.upstream);
    await Promise.all(pairs.map((p) => p.done));
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    for (;;) {
      let client: Deno.TcpConn;
      try {
        client = await listener.accept();
      } catch {
        return; // listener closed
      }
      if (this.#disposed) {
        closeQuietly(client);
        continue;
      }
      const pair: Pair = { client, done: Promise.resolve() };
      pair.done = this.#forward(pair).finally(() => this.#pairs.delete(pair));
      this.#pairs.add(pair);
    }
  }

  async #forward(pair: Pair): Promise<void> {
    while (this.#mode === "stall") await this.#stalled.promise;
    try {
      pair.upstream = await Deno.connect(this.#target);
    } catch {
      closeQuietly(pair.client);
      return;
    }
    const gate = () => this.#mode === "stall" ? this.#stalled.promise : undefined;
    const latency = () => this.#latencyMs;
    await Promise.all([
      pump(pair.client, pair.upstream, gate, latency),
      pump(pair.upstream, pair.client, gate, latency),
    ]);
  }
}

interface Pair {
  client: Deno.TcpConn;
  upstream?: Deno.TcpConn;
  done: Promise<void>;
}

async function pump(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  gate: () => Promise<void> | undefined,
  latency: () => number,
): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      if (latency() > 0) await delay(latency()); // slowed: every chunk waits, so each round trip takes twice that
      for (let wait = gate(); wait; wait = gate()) await wait; // stalled: hold the data until restored
      for (let written = 0; written < n;) written += await to.write(buffer.subarray(written, n));
    }
  } catch { /* closed by the other side or by cut() */ }
  closeQuietly(from, to);
}

function closeQuietly(...conns: (Deno.Conn | undefined)[]): void {
  for (const conn of conns) {
    try {
      conn?.close();
    } catch { /* already closed */ }
  }
}

/** `url` with its port replaced (to go through a {@link TcpProxy}). */
export function viaPort(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.port = String(port);
  return parsed.toString();
}
