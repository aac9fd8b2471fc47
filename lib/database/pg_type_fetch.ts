/**
 * A guard around one postgres.js defect: each new connection first queries
 * the type catalog (`fetch_types`), and postgres.js 3.4.9 discards that
 * query's promise (porsager/postgres#1192). When the connection fails during
 * it — closed, refused on reconnect, its backend terminated, a timeout — the
 * rejection is unhandled, and Deno ends the process with it. The chaos soak
 * saw it twice: a running instance exit 1 ("Uncaught (in promise) Error:
 * connect ECONNREFUSED") when its connections were terminated and then
 * refused, and a starting one die in its probe (`ensureDatabase`) of
 * "terminating connection due to administrator command". Both pools of
 * `database.ts` install this guard.
 *
 * Nothing waits on that query: the query that opened the connection fails or
 * succeeds on its own (the writer retries it), and the next connection
 * fetches the types again. So that one rejection is logged and dropped; every
 * other unhandled rejection still ends the process. Remove this module once
 * postgres.js handles the promise.
 *
 * @module
 */

import { getLogger } from "../log.ts";

const log = getLogger("database");
let installed = false;

/** Whether `reason` is the rejection of postgres.js's own type-catalog query (its error carries the query). */
export function isTypeFetchFailure(reason: unknown): boolean {
  const query = (reason as { query?: unknown } | null)?.query;
  return typeof query === "string" && query.includes("from pg_catalog.pg_type a") && query.includes("b.typarray");
}

/** Drops (with a warning) the unhandled rejections of {@link isTypeFetchFailure}; idempotent. */
export function guardTypeFetch(): void {
  if (installed) return;
  installed = true;
  globalThis.addEventListener("unhandledrejection", (event) => {
    if (!isTypeFetchFailure(event.reason)) return;
    event.preventDefault();
    log.warn("A new database connection failed while loading the type catalog ({error}); the next one retries", {
      error: (event.reason as Error).message,
    });
  });
}
