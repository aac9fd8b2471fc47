/**
 * The listening connection, across instances and faults: a client on one
 * instance sees every commit of another; the listening backend terminated
 * mid-drain (pg_terminate_backend, this test's database only) is reconnected
 * and resynchronised, and the stream still ends on the exact totals.
 */
import assert from "node:assert/strict";
import { migrate } from "../../lib/database/migrations.ts";
import { ResultsHub } from "../../lib/results/hub.ts";
import { LISTENER_APPLICATION_NAME, ResultsListener } from "../../lib/results/listener.ts";
import { countVotes } from "../../lib/database/sql/count_votes.ts";
import { TcpProxy, viaPort } from "../support/proxy.ts";
import { lawVote, resultsService, untilTotals } from "../support/results.ts";
import { createTestDatabase, results, type TestDatabase, testPool } from "../support/servers.ts";
import { admin } from "../support/service.ts";
import { openStream } from "../support/sse.ts";
import { assertExactOutcome, buildMix } from "../support/votes.ts";
import { waitForEvent, waitUntil } from "../support/wait.ts";

/** Backend pids of the listening connections on this test's database (never another database's). */
async function listenerBackends(db: TestDatabase): Promise<number[]> {
  const rows = await db.sql<{ pid: number }[]>`
    select pid from pg_stat_activity where datname = ${db.name} and application_name = ${LISTENER_APPLICATION_NAME}`;
  return rows.map((r) => r.pid);
}

Deno.test("results across instances: a client on A receives the commits B makes", async () => {
  await using setup = await resultsService("h14_listen");
  const { db, queue, service: a } = setup;
  await using b = await setup.spawn();
  assert.equal((await admin(a, "/pause")).status, 200, "A consumes nothing: every commit is B's");
  await using onA = await openStream(`${a.url}/results/stream`);
  await using onB = await openStream(`${b.url}/results/stream`);
  const mix = buildMix({ valid: 1500, laws: 5, duplicates: 30, malformed: 5, seed: 7 });
  for (let i = 0; i < mix.bodies.length; i += 250) await queue.publish(mix.bodies.slice(i, i + 250));
  await untilTotals(onA, mix.expected);
  await untilTotals(onB, mix.expected);
  await assertExactOutcome(db.sql, mix.expected, mix.contents);
  assert.equal((await a.status()).totals.counted, 0, "A counted nothing");
  assert.equal((await b.status()).totals.counted, 1500, "B counted everything");
  assert.ok(onA.events.filter((e) => e.event === "totals").length >= 3, "A streamed B's commits as they came");
  assert.deepEqual(
    [...onA.laws.values()].map((l) => l.version),
    [...onB.laws.values()].map((l) => l.version),
    "both end on the same versions",
  );
  assert.equal(await a.stop(), 0);
  assert.equal(await b.stop(), 0);
});

Deno.test("results: the listening connection terminated mid-drain is reconnected, and the stream ends exact", async () => {
  const mix = buildMix({ valid: 6000, laws: 8, duplicates: 100, malformed: 10, seed: 8 });
  await using setup = await resultsService("h14_listen", { RETRY_DELAY_SECONDS: "0.05" });
  const { db, queue, service } = setup;
  await using stream = await openStream(`${service.url}/results/stream`);
  const [first] = await listenerBackends(db);
  assert.ok(first, "one listening backend, named by application_name");
  await queue.publish(mix.bodies);
  // Mid-drain: some totals streamed, far from all of them.
  await waitForEvent(stream.changed, "event", () => stream.events.length >= 3, 30_000);
  const [{ terminated }] = await db.sql<{ terminated: boolean }[]>`select pg_terminate_backend(${first}) as terminated`;
  assert.ok(terminated);
  const countedAtKill = Object.values(await results(db.sql)).reduce((n, [o, x]) => n + o + x, 0);
  await waitUntil(
    async () => {
      const now = await listenerBackends(db);
      return now.length === 1 && now[0] !== first;
    },
    "a new listening backend",
    20_000,
    50,
  );
  await untilTotals(stream, mix.expected);
  await assertExactOutcome(db.sql, mix.expected, mix.contents);
  assert.ok(countedAtKill < 6000, `killed mid-drain (${countedAtKill} of 6000 counted then)`);
  assert.match(service.output(), /listening connection was lost/);
  assert.match(service.output(), /listening again/);
  for (const [law, versions] of stream.versions) {
    assert.deepEqual(versions, [...new Set(versions)].sort((x, y) => x - y), `${law}: versions only go up`);
  }
  assert.equal(await service.stop(), 0);
});

Deno.test("results listener: commits made while it cannot reach the database are sent after it reconnects (resync)", async () => {
  await using db = await createTestDatabase();
  const writer = testPool(db.url, 2);
  await using proxy = new TcpProxy(Number(new URL(db.url).port || 5432));
  const hub = new ResultsHub({ maxClients: 10, heartbeatMs: 60_000 });
  const listener = new ResultsListener({
    config: {
      databaseUrl: viaPort(db.url, proxy.port),
      postgresSslMode: "disable",
      postgresSslRootCert: undefined,
      retryDelayMs: 50,
    },
    hub,
  });
  const count = (voter: number, lawId: string) =>
    countVotes(writer, [lawVote(voter, lawId)], { batchAgeMs: 1, instance: "t" });
  try {
    await migrate(writer);
    await count(1, "A");
    await listener.start();
    assert.deepEqual(hub.snapshot().map((l) => [l.law_id, l.oui_count, l.version]), [["A", 1, 1]], "loaded at start");
    await count(2, "A");
    await waitUntil(() => hub.version("A") === 2, "a notified commit reaches the hub", 10_000);

    await proxy.cut("refuse");
    // Committed while the listener is away: their notifications are lost to it.
    await count(3, "A");
    await count(4, "B");
    assert.equal(hub.version("B"), 0);
    proxy.restore();
    await waitUntil(
      () => hub.version("A") === 3 && hub.version("B") === 1,
      "resynchronised from the table",
      20_000,
      50,
    );
    assert.deepEqual(hub.snapshot().map((l) => [l.law_id, l.oui_count]), [["A", 3], ["B", 1]]);
    assert.ok(listener.listens >= 2, "it listened again");
    await count(5, "B");
    await waitUntil(() => hub.version("B") === 2, "notifications flow again", 10_000);
  } finally {
    hub.close();
    await listener.end();
    await writer.end({ timeout: 1 });
  }
});
