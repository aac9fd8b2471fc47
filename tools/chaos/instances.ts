/**
 * The soak's instances: N service processes on one queue and one database,
 * each behind its own pair of TCP proxies (broker, database) so a fault can
 * cut one instance off and nobody else; their restarts; and a monitor that
 * polls each one's /status, so that progress (committed batches, summed over
 * the instance's restarts) and unexpected exits are seen.
 *
 * It owns neither the faults (`faults.ts`) nor the checks (`checks.ts`).
 *
 * @module
 */

import { TcpProxy, viaPort } from "../../tests/support/proxy.ts";
import { RABBITMQ_URL } from "../../tests/support/servers.ts";
import { serviceEnv, type ServiceProcess, spawnService } from "../../tests/support/service.ts";
import { delay } from "../../tests/support/wait.ts";

/** One instance slot: its proxies, and the process running in it now (none while it is stopped). */
export interface Slot {
  index: number;
  broker: TcpProxy;
  db: TcpProxy;
  service: ServiceProcess | undefined;
  /** Processes started in this slot so far. */
  generation: number;
  /** Batches committed by this slot's earlier processes. */
  base: number;
  /** Batches the current process had committed at the last poll. */
  batches: number;
  /** Set while a fault stops the process on purpose (its exit is then no surprise). */
  stopping: boolean;
}

/** Something the monitor found wrong. */
export type Problem = (message: string) => void;

/** The service's settings in the soak: the test suite's, a shorter commit timeout (stalls end in seconds). */
const OVERRIDES: Record<string, string> = {
  COMMIT_TIMEOUT_SECONDS: "10",
  SHUTDOWN_TIMEOUT_SECONDS: "20",
  LOG_LEVEL: "WARNING",
};

/** The instances of one soak. */
export class Instances implements AsyncDisposable {
  readonly slots: Slot[];
  /** Starts that failed and were tried again (see {@link spawn}). */
  readonly failedStarts: string[] = [];
  readonly #env: (slot: Slot) => Record<string, string>;
  readonly #problem: Problem;
  #monitoring: Promise<void> | undefined;
  #stopped = false;

  constructor(count: number, db: { url: string }, queue: { name: string }, problem: Problem) {
    const dbPort = Number(new URL(db.url).port || 5432);
    const brokerPort = Number(new URL(RABBITMQ_URL).port || 5672);
    this.slots = Array.from({ length: count }, (_, index) => ({
      index,
      broker: new TcpProxy(brokerPort, new URL(RABBITMQ_URL).hostname),
      db: new TcpProxy(dbPort, new URL(db.url).hostname),
      service: undefined,
      generation: 0,
      base: 0,
      batches: 0,
      stopping: false,
    }));
    this.#env = (slot) =>
      serviceEnv(db, queue, {
        ...OVERRIDES,
        DATABASE_URL: viaPort(db.url, slot.db.port),
        RABBITMQ_URL: viaPort(RABBITMQ_URL, slot.broker.port),
      });
    this.#problem = problem;
  }

  /** Starts every instance and the monitor. */
  async start(): Promise<void> {
    await Promise.all(this.slots.map((slot) => this.spawn(slot)));
    this.#monitoring = this.#monitor();
  }

  /**
   * Starts a process in `slot` (after a fault stopped the last one); waits until it serves HTTP. A start
   * that fails (the service exits 1 when the database or the broker fails it at start, e.g. its backends
   * terminated mid-migration) is tried again a second later, as a supervisor (systemd's
   * `Restart=on-failure`, Kubernetes) would: counted in {@link failedStarts}, and an error after 10.
   */
  async spawn(slot: Slot): Promise<void> {
    slot.base += slot.batches;
    slot.batches = 0;
    for (let attempt = 1;; attempt++) {
      slot.generation += 1;
      try {
        slot.service = await spawnService(this.#env(slot), { timeoutMs: 60_000 });
        break;
      } catch (error) {
        this.failedStarts.push(`instance ${slot.index}: ${(error as Error).message.split("\n").slice(0, 2).join(" ")}`);
        if (attempt === 10) throw error;
        await delay(1000);
      }
    }
    slot.stopping = false;
  }

  /** Batches committed in `slot` so far, over all its processes. */
  progress(slot: Slot): number {
    return slot.base + slot.batches;
  }

  /**
   * Stops the process in `slot` with `signal` on purpose; resolves with its
   * exit code (the slot is empty until {@link spawn}).
   */
  async stop(slot: Slot, signal: Deno.Signal): Promise<number> {
    const service = slot.service!;
    slot.stopping = true;
    await this.#poll(slot).catch(() => {}); // its last count, so progress misses little
    const code = signal === "SIGTERM" ? await service.stopWithin(60_000) : await service.stop(signal);
    slot.service = undefined;
    return code;
  }

  /** Polls every instance's /status every 100 ms: progress, and exits no fault caused (restarted at once). */
  async #monitor(): Promise<void> {
    while (!this.#stopped) {
      await Promise.all(this.slots.map(async (slot) => {
        const service = slot.service;
        if (!service || slot.stopping) return;
        if (service.exitCode !== undefined) {
          this.#problem(
            `instance ${slot.index} (pid ${service.pid}) exited by itself with code ${service.exitCode}:\n` +
              service.output().slice(-3000),
          );
          slot.service = undefined;
          await this.spawn(slot).catch((error) => this.#problem(`instance ${slot.index} restart: ${error.message}`));
          return;
        }
        await this.#poll(slot).catch(() => {}); // busy or stopping: the next poll tells
      }));
      await delay(100);
    }
  }

  async #poll(slot: Slot): Promise<void> {
    const service = slot.service;
    if (!service) return;
    const status = await service.status();
    if (slot.service === service) slot.batches = Math.max(slot.batches, status.totals.batches);
  }

  /** Stops the monitor (the processes keep running). */
  async stopMonitor(): Promise<void> {
    this.#stopped = true;
    await this.#monitoring;
  }

  /** Restores every proxy (no cut, no latency). */
  restoreAll(): void {
    for (const slot of this.slots) {
      slot.broker.restore();
      slot.db.restore();
      slot.db.setLatency(0);
    }
  }

  /** SIGTERM to every instance; the exit code of each (or an error message when it did not stop in time). */
  async stopAll(): Promise<(number | string)[]> {
    await this.stopMonitor();
    return await Promise.all(this.slots.map(async (slot) => {
      if (!slot.service) return "not running";
      try {
        return await this.stop(slot, "SIGTERM");
      } catch (error) {
        return (error as Error).message.split("\n")[0];
      }
    }));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#stopped = true;
    await this.#monitoring?.catch(() => {});
    for (const slot of this.slots) {
      await slot.service?.[Symbol.asyncDispose]();
      await slot.broker[Symbol.asyncDispose]();
      await slot.db[Symbol.asyncDispose]();
    }
  }
}
