import assert from "node:assert/strict";
import { connectDatabase } from "../../lib/database/pool.ts";
import { DatabaseProbe } from "../../lib/database/probe.ts";
import { TcpProxy, viaPort } from "../support/proxy.ts";
import { createTestDatabase } from "../support/servers.ts";
import { delay, waitUntil } from "../support/wait.ts";

Deno.test("probe: reports a refused and a silent database, and each return, on a connection of its own", async () => {
  await using db = await createTestDatabase();
  await using proxy = new TcpProxy(Number(new URL(db.url).port || 5432));
  const seen: (string | undefined)[] = [];
  const probe = new DatabaseProbe(
    () =>
      connectDatabase({
        databaseUrl: viaPort(db.url, proxy.port),
        postgresMaxConnections: 1,
        postgresSslMode: "disable",
        postgresSslRootCert: undefined,
        connectTimeoutMs: 300,
      }, { prepare: false }),
    { onChange: (failure) => seen.push(failure), intervalMs: 100, timeoutMs: 300 },
  );
  probe.start();
  try {
    await waitUntil(() => proxy.open === 1, "the probe holds one connection");
    assert.deepEqual(seen, [], "an answering database is no change");

    await proxy.cut();
    await waitUntil(() => seen.length === 1, "the refusal is reported");
    assert.match(seen[0]!, /ECONNREFUSED/);
    assert.equal(probe.failure, seen[0]);
    proxy.restore();
    await waitUntil(() => seen.length === 2, "the return is reported");
    assert.equal(seen[1], undefined);

    await proxy.cut("stall");
    await waitUntil(() => seen.length === 3, "the silence is reported");
    assert.equal(seen[2], "no answer to select 1 within 300 ms");
    proxy.restore();
    await waitUntil(() => seen.length === 4 && probe.failure === undefined, "the return is reported");
  } finally {
    await probe.stop();
  }
  const reported = seen.length;
  await proxy.cut();
  await delay(300); // three probe periods: none comes after stop()
  assert.equal(seen.length, reported, "nothing is probed after stop()");
});
