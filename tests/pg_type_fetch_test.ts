/**
 * The guard of lib/pg_type_fetch.ts, against the real database: postgres.js's
 * own type-catalog query fails on a new connection (here: cancelled by a 1 ms
 * statement_timeout, the reproduction of porsager/postgres#1192), its
 * discarded promise rejects, and the process lives on. Without the guard this
 * test fails with "Uncaught (in promise) PostgresError" — as the chaos soak's
 * instance did with ECONNREFUSED when its connections were cut while reconnecting.
 *
 * @module
 */

import assert from "node:assert/strict";
import { isTypeFetchFailure } from "../lib/pg_type_fetch.ts";
import { createTestDatabase, testPool } from "./support/servers.ts";
import { waitUntil } from "./support/wait.ts";

Deno.test("a failed type-catalog query of a new connection is dropped, not fatal; the pool works on", async () => {
  await using db = await createTestDatabase();
  const seen: { prevented: boolean; typeFetch: boolean }[] = [];
  const listener = (event: PromiseRejectionEvent) =>
    seen.push({ prevented: event.defaultPrevented, typeFetch: isTypeFetchFailure(event.reason) });
  const url = new URL(db.url);
  url.searchParams.set("statement_timeout", "1"); // a connection parameter: the catalog query is cancelled
  const sql = testPool(url.toString(), 1); // installs the guard (connectDatabase), before this listener
  globalThis.addEventListener("unhandledrejection", listener);
  try {
    await sql`select 1`.catch(() => {}); // the query that opens the connection: settles either way
    await waitUntil(() => seen.length > 0, "the discarded catalog query rejected", 5000);
    assert.deepEqual(seen[0], { prevented: true, typeFetch: true }, "the guard dropped it");
  } finally {
    globalThis.removeEventListener("unhandledrejection", listener);
    await sql.end({ timeout: 1 });
  }
  const pool = testPool(db.url, 1);
  assert.deepEqual(
    [...await pool`select 1 as one`],
    [{ one: 1 }],
    "the process lives on, and a pool connects as usual",
  );
  await pool.end({ timeout: 1 });
});

Deno.test("isTypeFetchFailure: only postgres.js's catalog query", () => {
  const error = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), {
    query: "\n      select b.oid, b.typarray\n      from pg_catalog.pg_type a\n      left join pg_catalog.pg_type b",
  });
  assert.equal(isTypeFetchFailure(error), true);
  assert.equal(isTypeFetchFailure(Object.assign(new Error("x"), { query: "select 1" })), false);
  assert.equal(isTypeFetchFailure(new Error("connect ECONNREFUSED 127.0.0.1:5432")), false);
  assert.equal(isTypeFetchFailure(undefined), false);
  assert.equal(isTypeFetchFailure("text"), false);
});
