/**
 * The guard of lib/database/pg_type_fetch.ts, against the real database: postgres.js's
 * own type-catalog query fails on a new connection (here: cancelled by a 1 ms
 * statement_timeout, the reproduction of porsager/postgres#1192), its
 * discarded promise rejects, and the process lives on. Each case runs in a
 * process of its own (the guard is installed once per process), for each way
 * the service opens connections: the start's probe (`ensureDatabase`) and the
 * pool (`connectDatabase`). Without the guard the process dies of "Uncaught
 * (in promise) PostgresError", as the chaos soak's instances did (with
 * ECONNREFUSED and "terminating connection due to administrator command").
 *
 * @module
 */

import assert from "node:assert/strict";
import { isTypeFetchFailure } from "../../lib/database/pg_type_fetch.ts";
import { type CommandText, commandText } from "../support/command.ts";
import { createTestDatabase } from "../support/servers.ts";

const DATABASE = new URL("../../lib/database/pool.ts", import.meta.url).href;
const GUARD = new URL("../../lib/database/pg_type_fetch.ts", import.meta.url).href;

/** Runs `body` (after the imports) in a new Deno process with DATABASE_URL; its exit code and output. */
async function inProcess(url: string, body: string): Promise<CommandText> {
  const script = `
    import { connectDatabase, ensureDatabase } from "${DATABASE}";
    import { isTypeFetchFailure } from "${GUARD}";
    const url = Deno.env.get("DATABASE_URL");
    let dropped = 0;
    addEventListener("unhandledrejection", (e) => queueMicrotask(() => {
      if (e.defaultPrevented && isTypeFetchFailure(e.reason)) dropped++;
    }));
    ${body}
    for (let i = 0; i < 100 && dropped === 0; i++) await new Promise((r) => setTimeout(r, 50));
    console.log(dropped > 0 ? "dropped" : "none seen");
    Deno.exit(0); // the pool may hold its connection open
  `;
  return commandText(
    await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", script],
      env: { DATABASE_URL: url },
      cwd: new URL("../..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
    }).output(),
  );
}

/** A URL whose connections cancel every statement after 1 ms (a connection parameter postgres.js passes on). */
function cancelling(url: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set("statement_timeout", "1");
  return parsed.toString();
}

for (
  const [name, body] of [
    [
      "the start's probe (ensureDatabase)",
      `await ensureDatabase({ databaseUrl: url, postgresSslMode: "disable", postgresSslRootCert: undefined })
        .catch(() => {});`,
    ],
    [
      "the pool (connectDatabase)",
      `const sql = connectDatabase({ databaseUrl: url, postgresMaxConnections: 1, postgresSslMode: "disable",
        postgresSslRootCert: undefined });
      await sql\`select 1\`.catch(() => {});`,
    ],
  ]
) {
  Deno.test(`${name}: a failed type-catalog query of a new connection is dropped, not fatal`, async () => {
    await using db = await createTestDatabase();
    const { code, stdout, both } = await inProcess(cancelling(db.url), body);
    assert.equal(code, 0, `the process lives on:\n${both}`);
    assert.match(stdout, /^dropped$/m, `the catalog query did fail, and the guard dropped it:\n${both}`);
  });
}

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
