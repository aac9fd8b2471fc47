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
  /** Down (true) or up (false) at each report, a run of reports of the same kind as one. */
  const changes = () => seen.map((f) => f !== undefined).filter((down, i, all) => i === 0 || down !== all[i - 1]);
  probe.start();
  try {
    await waitUntil(() => proxy.open === 1, "the probe holds one connection");
    assert.deepEqual(seen, [], "an answering database is no change");

    await proxy.cut();
    // The connection it held was dropped ("ended by the other party"), then new ones are refused.
    await waitUntil(() => /ECONNREFUSED/.test(probe.failure ?? ""), "the refusal is reported");
    proxy.restore();
    await waitUntil(() => probe.failure === undefined, "the return is reported");
    assert.deepEqual(changes(), [true, false]);

    await proxy.cut("stall");
    await waitUntil(() => probe.failure === "no answer to select 1 within 300 ms", "the silence is reported");
    proxy.restore();
    await waitUntil(() => probe.failure === undefined, "the return is reported");
    assert.deepEqual(changes(), [true, false, true, false]);
    assert.equal(seen.at(-1), undefined);
  } finally {
    await probe.stop();
  }
  const reported = seen.length;
  await proxy.cut();
  await delay(300); // three probe periods: none comes after stop()
  assert.equal(seen.length, reported, "nothing is probed after stop()");
});
