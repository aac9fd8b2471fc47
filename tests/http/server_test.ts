import assert from "node:assert/strict";
import { VERSION } from "../../lib/version.ts";
import { startService } from "../../lib/service.ts";
import { createTestDatabase, createTestQueue, lockLaw, results } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { waitForEvent, waitUntil } from "../support/wait.ts";

const TOKEN = "test-admin-token-0123456789";
const auth = { authorization: `Bearer ${TOKEN}` };

async function call(base: string, path: string, init: RequestInit = {}) {
  const response = await fetch(`${base}${path}`, init);
  const text = await response.text();
  const type = response.headers.get("content-type") ?? "";
  return { status: response.status, headers: response.headers, body: type.includes("json") ? JSON.parse(text) : text };
}

interface ServiceContext {
  base: string;
  service: Awaited<ReturnType<typeof startService>>;
  queue: Awaited<ReturnType<typeof createTestQueue>>;
  db: Awaited<ReturnType<typeof createTestDatabase>>;
}

async function withService(overrides: Record<string, string>, fn: (ctx: ServiceContext) => Promise<void>) {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const service = await startService(testConfig(db, queue, overrides));
  try {
    await fn({ base: `http://127.0.0.1:${service.http.port}`, service, queue, db });
  } finally {
    await service.stop();
  }
}

Deno.test("http: observation routes, status codes, and no secrets", async () => {
  await withService({ ADMIN_TOKEN: TOKEN }, async ({ base, service, queue }) => {
    await queue.publish([seedVote(1, "L1", "oui"), "bad"]);
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === 2);

    const health = await call(base, "/healthz");
    assert.deepEqual([health.status, health.body], [200, { status: "ok" }]);
    const ready = await call(base, "/readyz");
    assert.deepEqual([ready.status, ready.body.broker, ready.body.database], [200, "up", "up"]);
    const status = await call(base, "/status");
    assert.equal(status.status, 200);
    assert.equal(status.body.state, "running");
    assert.equal(status.body.version, VERSION);
    assert.equal(status.body.totals.counted, 1);
    assert.equal(status.body.totals.deadLettered, 1);
    assert.match(status.body.last_commit_at, /^\d{4}-/);

    const head = await fetch(`${base}/healthz`, { method: "HEAD" });
    await head.body?.cancel();
    assert.equal(head.status, 200);
    const missing = await call(base, "/nope");
    assert.equal(missing.status, 404);
    const wrongMethod = await call(base, "/metrics", { method: "POST" });
    assert.deepEqual([wrongMethod.status, wrongMethod.headers.get("allow")], [405, "GET, HEAD"]);
    const getFlush = await call(base, "/flush");
    assert.deepEqual([getFlush.status, getFlush.headers.get("allow")], [405, "POST"]);

    for (const path of ["/healthz", "/readyz", "/status", "/metrics"]) {
      const { body } = await call(base, path);
      const text = typeof body === "string" ? body : JSON.stringify(body);
      assert.ok(!text.includes(TOKEN) && !text.includes("guest:guest"), `${path} leaks a secret`);
    }
  });
});

Deno.test("http: /metrics parses and carries the seed's names", async () => {
  await withService({}, async ({ base, service, queue }) => {
    await queue.publish([seedVote(1, "L1", "oui"), seedVote(2, "L1", "non"), seedVote(2, "L1", "oui"), "{"]);
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === 4);
    const { status, headers, body } = await call(base, "/metrics");
    assert.equal(status, 200);
    assert.match(headers.get("content-type") ?? "", /^text\/plain/);
    const samples = new Map<string, number>();
    for (const line of (body as string).split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/);
      assert.ok(match, `unparseable line: ${line}`);
      samples.set(match[1], Number(match[2]));
    }
    assert.equal(samples.get('votes_aggregated_total{law_id="L1",choice="oui"}'), 1);
    assert.equal(samples.get('votes_aggregated_total{law_id="L1",choice="non"}'), 1);
    assert.equal(samples.get('current_vote_totals{law_id="L1",choice="oui"}'), 1);
    assert.equal(samples.get("batch_size_processed_total"), 4);
    assert.ok(samples.has("batch_processing_duration_seconds"));
    assert.equal(samples.get("duplicate_attempts_total"), 1);
    assert.equal(samples.get('dead_lettered_total{reason="invalid_json"}'), 1);
    assert.equal(samples.get('aggregator_state{state="running"}'), 1);
    assert.equal(samples.get("consumer_paused"), 0);
    assert.ok(samples.has('db_pool_connections{state="max"}'));
    assert.ok(samples.has("batch_commit_duration_seconds_count"));
    assert.ok(samples.has("oldest_unacked_vote_age_seconds"));
    assert.ok(samples.has("process_resident_memory_bytes"), "default process metrics");
  });
});

Deno.test("http: admin routes need the bearer token, and are off without ADMIN_TOKEN", async () => {
  await withService({ ADMIN_TOKEN: TOKEN }, async ({ base }) => {
    for (const path of ["/flush", "/pause", "/resume"]) {
      const none = await call(base, path, { method: "POST" });
      assert.equal(none.status, 401, path);
      assert.match(none.headers.get("www-authenticate") ?? "", /^Bearer/);
      const wrong = await call(base, path, { method: "POST", headers: { authorization: `Bearer ${TOKEN}x` } });
      assert.equal(wrong.status, 401, path);
      const basic = await call(base, path, { method: "POST", headers: { authorization: `Basic ${btoa("a:b")}` } });
      assert.equal(basic.status, 401, path);
    }
    const big = await call(base, "/flush", { method: "POST", headers: auth, body: "x".repeat(5000) });
    assert.equal(big.status, 413);
  });
  await withService({}, async ({ base }) => {
    const off = await call(base, "/pause", { method: "POST", headers: auth });
    assert.equal(off.status, 403);
    assert.match(off.body.error, /set ADMIN_TOKEN/);
  });
});

/**
 * Holds a commit in flight (a vote for law HOLD waits on a row lock), so that the votes published next gather in
 * the open batch: with group commit, a batch closes as soon as deliveries pause and no commit is running.
 */
async function holdCommit({ service, queue, db }: Pick<ServiceContext, "service" | "queue" | "db">) {
  const lock = await lockLaw(db.sql, "HOLD");
  await queue.publish([seedVote(9999, "HOLD", "oui")]);
  await waitUntil(() => service.aggregator.status().inflight_batches === 1, "a commit is held on the row lock");
  return lock;
}

Deno.test("http: POST /flush answers after the open batch is visible in vote_results", async () => {
  await withService(
    { ADMIN_TOKEN: TOKEN, BATCH_SIZE: "1000", BATCH_TIMEOUT_SECONDS: "600" },
    async (ctx) => {
      const { base, service, queue, db } = ctx;
      const empty = await call(base, "/flush", { method: "POST", headers: auth });
      assert.deepEqual([empty.status, empty.body], [200, { flushed: 0 }]);
      const held = await holdCommit(ctx);
      await queue.publish(Array.from({ length: 7 }, (_, i) => seedVote(i, "L9", "oui")));
      await waitUntil(() => service.aggregator.status().open_batch_messages === 7, "7 votes are batched");
      assert.deepEqual(await results(db.sql), {}, "nothing committed yet");
      const flushing = call(base, "/flush", { method: "POST", headers: auth });
      await held[Symbol.asyncDispose]();
      const flushed = await flushing;
      assert.deepEqual([flushed.status, flushed.body], [200, { flushed: 7 }]);
      assert.deepEqual(await results(db.sql), { HOLD: [1, 0], L9: [7, 0] });
    },
  );
});

Deno.test("http: pause stops consumption and keeps messages in the queue; resume counts them", async () => {
  await withService({ ADMIN_TOKEN: TOKEN, BATCH_SIZE: "1000", BATCH_TIMEOUT_SECONDS: "600" }, async (ctx) => {
    const { base, service, queue, db } = ctx;
    const held = await holdCommit(ctx);
    await queue.publish([seedVote(1, "L1", "oui")]);
    await waitUntil(() => service.aggregator.status().open_batch_messages === 1, "1 vote is batched");
    const pausing = call(base, "/pause", { method: "POST", headers: auth });
    await held[Symbol.asyncDispose]();
    const paused = await pausing;
    assert.deepEqual([paused.status, paused.body], [200, { state: "paused", flushed: 1, committed: true }]);
    assert.deepEqual(await results(db.sql), { HOLD: [1, 0], L1: [1, 0] }, "pause commits what is batched");
    const again = await call(base, "/pause", { method: "POST", headers: auth });
    assert.deepEqual(again.body, { state: "paused", flushed: 0, committed: true }, "pause is idempotent");

    await queue.publish(Array.from({ length: 20 }, (_, i) => seedVote(100 + i, "L1", "non")));
    const depth = await queue.channel.checkQueue(queue.name);
    assert.equal(depth.consumerCount, 0, "no consumer while paused");
    assert.equal(depth.messageCount, 20, "the messages wait in the queue");
    const ready = await call(base, "/readyz");
    assert.deepEqual([ready.status, ready.body.state], [200, "paused"], "a deliberate pause is ready");
    assert.equal((await call(base, "/status")).body.state, "paused");

    const resumed = await call(base, "/resume", { method: "POST", headers: auth });
    assert.deepEqual([resumed.status, resumed.body], [200, { state: "running" }]);
    const twice = await call(base, "/resume", { method: "POST", headers: auth });
    assert.deepEqual(twice.body, { state: "running" }, "resume is idempotent");
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.counted === 22);
    assert.deepEqual(await results(db.sql), { HOLD: [1, 0], L1: [1, 20] });
    assert.equal(await queue.count(), 0, "every message acknowledged");
  });
});

Deno.test("http: pause survives a broker reconnect", async () => {
  await withService({ ADMIN_TOKEN: TOKEN }, async ({ base, service, queue }) => {
    await call(base, "/pause", { method: "POST", headers: auth });
    const session = service.broker.session;
    await service.broker.reconnect();
    await waitUntil(() => service.broker.session > session && service.broker.connected, "reconnected");
    assert.equal(service.broker.consuming, false);
    assert.equal((await queue.channel.checkQueue(queue.name)).consumerCount, 0);
    await call(base, "/resume", { method: "POST", headers: auth });
    assert.equal((await queue.channel.checkQueue(queue.name)).consumerCount, 1);
  });
});

/** Sends `request` as it is over TCP (fetch would refuse a bad Host) and returns the whole answer. */
async function rawRequest(port: number, request: string): Promise<{ status: number; text: string }> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request));
  const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
  return { status: Number(text.match(/^HTTP\/1\.[01] (\d{3})/)?.[1]), text };
}

Deno.test("http: a malformed request (no Host, bad Host, bad target, bad header) answers 400 on every route, without internals", async () => {
  await withService({ ADMIN_TOKEN: TOKEN }, async ({ service }) => {
    const port = service.http.port;
    const routes = ["/metrics", "/healthz", "/readyz", "/status", "/flush", "/pause", "/resume", "/nope"];
    for (const path of routes) {
      for (const method of ["GET", "POST"]) {
        const { status, text } = await rawRequest(
          port,
          `${method} ${path} HTTP/1.1\r\nHost: a b\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`,
        );
        assert.equal(status, 400, `${method} ${path} with Host "a b": ${text}`);
        assert.doesNotMatch(text, /at |\.ts:|TypeError|Invalid URL/, `${method} ${path} leaks internals: ${text}`);
      }
    }
    // No Host header (RFC 9112 §3.2), on every route, whatever the method, the target's form or the version.
    for (const path of [...routes, "/", "/results", "/results/L1", "/results/stream"]) {
      for (const method of ["GET", "HEAD", "POST"]) {
        for (const request of [`${method} ${path} HTTP/1.1\r\n`, `${method} http://localhost${path} HTTP/1.1\r\n`]) {
          const { status, text } = await rawRequest(
            port,
            `${request}Authorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`,
          );
          assert.equal(status, 400, `${JSON.stringify(request)} without Host: ${text}`);
          if (method !== "HEAD") assert.match(text, /"malformed request: no Host header"/);
        }
      }
    }
    assert.equal((await rawRequest(port, "GET /healthz HTTP/1.0\r\n\r\n")).status, 400, "HTTP/1.0 without Host");
    const empty = await rawRequest(port, "GET /healthz HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n");
    assert.equal(empty.status, 200, `an empty Host is allowed: ${empty.text}`);
    const http10 = await rawRequest(port, "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n");
    assert.equal(http10.status, 200, `HTTP/1.0 with Host: ${http10.text}`);
    const malformed = [
      "GET /healthz HTTP/1.1\r\nHost: [::1\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: a\u0001b\r\nConnection: close\r\n\r\n",
      "GET healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\nConnection: close\r\n\r\n",
      "NOT A REQUEST\r\n\r\n",
    ];
    for (const request of malformed) {
      const { status, text } = await rawRequest(port, request);
      assert.equal(status, 400, `${JSON.stringify(request)}: ${text}`);
      assert.doesNotMatch(
        text,
        /at |\.ts:|TypeError|Invalid URL/,
        `${JSON.stringify(request)} leaks internals: ${text}`,
      );
    }
    // Still serving, and the control plane's state untouched: nothing was paused.
    const { status } = await rawRequest(port, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert.equal(status, 200);
    assert.equal(service.aggregator.state, "running");
  });
});
