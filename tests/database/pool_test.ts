import assert from "node:assert/strict";
import { connectDatabase } from "../../lib/database/pool.ts";
import { TcpProxy, viaPort } from "../support/proxy.ts";
import { createTestDatabase } from "../support/servers.ts";

Deno.test("pool: after a long outage, the first query reaches the server within a second of its return", async () => {
  await using db = await createTestDatabase();
  await using proxy = new TcpProxy(Number(new URL(db.url).port) || 5432);
  const sql = connectDatabase({
    databaseUrl: viaPort(db.url, proxy.port),
    postgresMaxConnections: 1,
    postgresSslMode: "disable",
    postgresSslRootCert: undefined,
    connectTimeoutMs: 2000,
  });
  try {
    assert.deepEqual([...await sql`select 1 as one`], [{ one: 1 }]);
    await proxy.cut();
    // As many failed attempts as a long outage makes: postgres.js's own backoff would be 10–20 s by now.
    for (let i = 0; i < 7; i++) await assert.rejects(sql`select 1`);
    proxy.restore();
    const restored = performance.now();
    assert.deepEqual([...await sql`select 1 as one`], [{ one: 1 }]);
    const ms = performance.now() - restored;
    assert.ok(ms < 1500, `the first query after the return took ${Math.round(ms)} ms`);
  } finally {
    await sql.end({ timeout: 1 });
  }
});
