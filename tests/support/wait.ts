/**
 * Waiting: for an event, for a state no event announces, and deadlines that
 * bound every wait of a test case. Pauses are for spacing polls only, never to
 * wait for something to happen.
 *
 * @module
 */

import assert from "node:assert/strict";
import { delay } from "../../lib/timeout.ts";
import type { ServiceProcess } from "./service.ts";

export { delay };

/**
 * Resolves when `predicate()` holds, checked at every `event` on `target`;
 * rejects after `timeoutMs` with what `describe()` says.
 */
export function waitForEvent(
  target: EventTarget,
  event: string,
  predicate: () => boolean,
  timeoutMs = 20_000,
  describe: () => string = () => "",
): Promise<void> {
  if (predicate()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!predicate()) return;
      clearTimeout(timer);
      target.removeEventListener(event, check);
      resolve();
    };
    const timer = setTimeout(() => {
      target.removeEventListener(event, check);
      reject(new Error(`timed out after ${timeoutMs} ms waiting on '${event}' ${describe()}`));
    }, timeoutMs);
    target.addEventListener(event, check);
  });
}

/**
 * Resolves when `predicate()` holds, checked every `intervalMs`; for states no
 * event announces (a queue's depth, a row count). Rejects after `timeoutMs`.
 */
export async function waitUntil(
  predicate: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 20_000,
  intervalMs = 10,
): Promise<void> {
  await new Deadline(what, timeoutMs).until(predicate, what, { intervalMs, retryErrors: false });
}

/** A time budget for one test case: every wait in the case is bounded by what is left of it. */
export class Deadline {
  readonly #start = Date.now();
  readonly #end: number;
  readonly #label: string;
  /** What the case did and waited for, with times: appended to a failure, printed with FAULT_TRACE=1. */
  readonly trace: string[] = [];

  constructor(label: string, ms: number) {
    this.#label = label;
    this.#end = this.#start + ms;
  }

  /** Notes a step in the {@link trace}. */
  step(what: string): void {
    this.trace.push(`[${((Date.now() - this.#start) / 1000).toFixed(1)} s] ${what}`);
  }

  /** Milliseconds left. */
  remaining(): number {
    return Math.max(0, this.#end - Date.now());
  }

  /**
   * Polls `predicate` until it holds, for states no event announces (queue
   * depths, row counts, a child's /status). Rejects after `timeoutMs` or when
   * the case's budget runs out, with what `describe` says about the last state.
   */
  async until(
    predicate: () => boolean | Promise<boolean>,
    what: string,
    options: { timeoutMs?: number; intervalMs?: number; describe?: () => string; retryErrors?: boolean } = {},
  ): Promise<void> {
    const limit = Math.min(options.timeoutMs ?? Infinity, this.remaining());
    const end = Date.now() + limit;
    for (;;) {
      let error: unknown;
      try {
        if (await predicate()) {
          this.step(`${what} (waited ${Date.now() - (end - limit)} ms)`);
          return;
        }
      } catch (e) {
        // A failed assertion or a missing permission will not heal: fail now, not at the deadline.
        if (e instanceof assert.AssertionError || e instanceof Deno.errors.NotCapable) throw e;
        if (options.retryErrors === false) throw e;
        error = e; // e.g. a service still starting: try again until the deadline
      }
      if (Date.now() >= end) {
        const last = options.describe?.() ?? "";
        throw new Error(
          `[${this.#label}] timed out after ${Math.round(limit)} ms waiting until ${what}` +
            (last ? `; last seen: ${last}` : "") + (error ? `; last error: ${(error as Error).message}` : ""),
        );
      }
      await delay(options.intervalMs ?? 50);
    }
  }
}

/** Runs `fn`; on failure, appends the case's trace and the tail of each service's output to the error. */
export async function withOutputOnFailure<T>(
  deadline: Deadline,
  services: () => ServiceProcess[],
  fn: () => Promise<T>,
): Promise<T> {
  try {
    const result = await fn();
    const trace = Deno.env.get("FAULT_TRACE");
    if (trace) console.log(deadline.trace.map((line) => `    ${line}`).join("\n"));
    if (trace === "output") { for (const s of services()) console.log(s.output()); }
    return result;
  } catch (error) {
    const outputs = services().map((s, i) => `--- service ${i} (pid ${s.pid}) ---\n${s.output().slice(-6000)}`);
    (error as Error).message += `\n--- trace ---\n${deadline.trace.join("\n")}\n${outputs.join("\n")}`;
    throw error;
  }
}

/** Resolves once 127.0.0.1:`port` accepts a connection; rejects once `exited()` holds, or after about 5 s. */
export async function untilAccepting(port: number, exited: () => boolean): Promise<void> {
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      if (exited()) throw new Error(`exited before accepting connections on port ${port}`);
      if (i > 100) throw new Error(`not accepting connections on port ${port} after 5 s`);
      await delay(50);
    }
  }
}
