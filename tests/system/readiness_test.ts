import assert from "node:assert/strict";
import { type Service, startService } from "../../lib/service.ts";
import { TcpProxy } from "../support/proxy.ts";
import { createTestDatabase, createTestQueue, results } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { waitForEvent, waitUntil } from "../support/wait.ts";

const TOKEN = "readiness-admin-token-0123456789";
const auth = { authorization: `Bearer ${TOKEN}` };

async function get(base: string, path: string) {
  const response = await fetch(`${base}${path}`);
  const text = await response.text();
  return { status: response.status, body: path === "/metrics" ? text : JSON.parse(text) };
}

/** `aggregator_ready` as /metrics shows it. */
async function readyGauge(base: string): Promise<number> {
  const { body } = await get(base, "/metrics");
  const match = (body as string).match(/^aggregator_ready (\d+)$/m);
  assert.ok(match, "/metrics has aggregator_ready");
  return Number(match[1]);
}

/** /readyz, /status and the gauge, which must agree. */
async function observe(base: string) {
  const [readyz, status, gauge] = [await get(base, "/readyz"), await get(base, "/status"), await readyGauge(base)];
  assert.equal(readyz.status === 200, readyz.body.ready, "the status code is the body's `ready`");
  assert.equal(status.body.ready, readyz.body.ready, "/status says what /readyz says");
  assert.equal(status.body.not_ready_reason, readyz.body.reason);
  assert.equal(status.body.state, readyz.body.state);
  assert.equal(gauge, readyz.body.ready ? 1 : 0, "aggregator_ready says what /readyz says");
  return { readyz, status: status.body };
}

/** A service whose database connections go through `proxy`, so a test can cut them and nobody else's. */
async function withProxiedService(
  overrides: Record<string, string>,
  fn: (ctx: {
    base: string;
    service: Service;
    proxy: TcpProxy;
    queue: Awaited<ReturnType<typeof createTestQueue>>;
    db: Awaited<ReturnType<typeof createTestDatabase>>;
  }) => Promise<void>,
) {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  await using proxy = new TcpProxy(Number(new URL(db.url).port || 5432));
  const viaProxy = new URL(db.url);
  viaProxy.port = String(proxy.port);
  const service = await startService(testConfig({ url: viaProxy.toString() }, queue, overrides));
  try {
    await fn({ base: `http://127.0.0.1:${service.http.port}`, service, proxy, queue, db });
  } finally {
    proxy.restore();
    await service.stop();
  }
}

Deno.test("readiness: a database outage past the retry budget is 503 naming the database, until it recovers", async () => {
  await withProxiedService(
    { MAX_RETRY_ATTEMPTS: "1", RETRY_DELAY_SECONDS: "0.02", BATCH_SIZE: "1" },
    async ({ base, service, proxy, queue, db }) => {
      await queue.publish([seedVote(1, "L1", "oui")]);
      await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.counted === 1);
      const running = await observe(base);
      assert.deepEqual(
        [running.readyz.status, running.readyz.body.reason, running.readyz.body.database, running.status.consuming],
        [200, null, "up", true],
      );

      await proxy.cut();
      await queue.publish([seedVote(2, "L1", "non")]);
      await waitUntil(() => service.aggregator.databaseFailing, "the commit fails past the retry budget");
      const down = await observe(base);
      assert.equal(down.readyz.status, 503);
      assert.match(down.readyz.body.reason, /^database: /);
      assert.match(down.readyz.body.database, /^down: /);
      assert.equal(down.readyz.body.broker, "up", "the broker is fine: only the database is named");
      assert.deepEqual(
        [down.status.state, down.status.database_failing, down.status.broker_connected, down.status.consuming],
        ["degraded", true, true, false],
      );
      await waitUntil(() => !service.broker.consuming, "consumption stops");

      proxy.restore();
      await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.counted === 2);
      await waitUntil(() => service.broker.consuming, "consumption resumes");
      const back = await observe(base);
      assert.deepEqual(
        [back.readyz.status, back.readyz.body.reason, back.readyz.body.database, back.status.state],
        [200, null, "up", "running"],
      );
      assert.deepEqual([back.status.database_failing, back.status.consuming], [false, true]);
      assert.deepEqual(await results(db.sql), { L1: [1, 1] });
    },
  );
});

Deno.test("readiness: an operator's pause is ready; a drain is not", async () => {
  await withProxiedService(
    { ADMIN_TOKEN: TOKEN, BATCH_SIZE: "1000", BATCH_TIMEOUT_SECONDS: "600", SHUTDOWN_TIMEOUT_SECONDS: "30" },
    async ({ base, service, proxy, queue, db }) => {
      await waitUntil(() => service.broker.consuming, "consuming");
      assert.equal((await observe(base)).readyz.status, 200);

      const pause = await fetch(`${base}/pause`, { method: "POST", headers: auth });
      await pause.body?.cancel();
      const paused = await observe(base);
      assert.deepEqual([paused.readyz.status, paused.readyz.body.state, paused.readyz.body.reason], [
        200,
        "paused",
        null,
      ]);
      assert.deepEqual([paused.status.consuming, paused.status.database_failing], [false, false]);
      const resume = await fetch(`${base}/resume`, { method: "POST", headers: auth });
      await resume.body?.cancel();

      // A batch whose commit cannot finish keeps the drain going while we look at it (the database is cut first:
      // with group commit the lone vote's batch closes and commits at once).
      await proxy.cut();
      await queue.publish([seedVote(1, "L2", "oui")]);
      await waitUntil(() => service.aggregator.status().inflight_batches === 1, "the vote's batch is committing");
      const stopped = service.stop();
      await waitUntil(() => service.aggregator.state === "draining", "the drain begins");
      const draining = await observe(base);
      assert.equal(draining.readyz.status, 503);
      assert.equal(draining.readyz.body.state, "draining");
      assert.match(draining.readyz.body.reason, /^draining: /);
      assert.equal(draining.status.consuming, false);

      proxy.restore();
      assert.equal(await stopped, true, "the drain committed the vote once the database answered");
      assert.deepEqual(await results(db.sql), { L2: [1, 0] });
    },
  );
});
