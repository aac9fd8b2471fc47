import assert from "node:assert/strict";
import { REJECT_DETAIL_HEADER, REJECT_REASON_HEADER } from "../lib/broker/dead_letter.ts";
import { BrokerSession } from "../lib/broker/session.ts";
import { Aggregator, type Broker } from "../lib/pipeline/aggregator.ts";
import { createTestDatabase, createTestQueue, lockLaw, RABBITMQ_URL, results, testPool } from "./support/servers.ts";
import { serviceEnv, spawnService, testConfig } from "./support/service.ts";
import { seedVote, workerVote } from "./support/votes.ts";
import { waitForEvent, waitUntil } from "./support/wait.ts";
import { migrate } from "../lib/database/migrations.ts";
import { createMetrics } from "../lib/metrics/registry.ts";
import { startService } from "../lib/service.ts";
import { VoteWriter } from "../lib/database/writer.ts";

Deno.test("service: a mixed stream is counted exactly; malformed messages end in the DLQ with their reason", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const valid: string[] = [];
  const expected: Record<string, [number, number]> = {};
  for (let voter = 0; voter < 600; voter++) {
    const law = `LAW-${voter % 4}`;
    const choice = voter % 3 === 0 ? "non" : "oui";
    valid.push(voter % 2 ? seedVote(voter, law, choice) : workerVote(voter, law, choice.toUpperCase()));
    expected[law] ??= [0, 0];
    expected[law][choice === "oui" ? 0 : 1] += 1;
  }
  const duplicates = [seedVote(1, "LAW-1", "non"), seedVote(3, "LAW-3", "oui", { timestamp: "2026-11-22T12:00:00Z" })];
  const redelivered = [valid[10], valid[11]];
  const malformed = [
    "not json",
    "[1,2]",
    JSON.stringify({ law_id: "L", choice: "oui" }),
    seedVote(9001, "LAW-0", "blanc"),
    JSON.stringify({ vote_hash: "xyz", law_id: "L", choice: "oui" }),
  ];
  await queue.publish([...valid.slice(0, 300), ...malformed, ...duplicates, ...valid.slice(300), ...redelivered]);

  const service = await startService(testConfig(db, queue, { BATCH_SIZE: "50", RABBITMQ_PREFETCH_COUNT: "200" }));
  try {
    const total = valid.length + malformed.length + duplicates.length + redelivered.length;
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === total);
    assert.deepEqual(await results(db.sql), expected);
    const t = service.aggregator.totals;
    assert.deepEqual([t.counted, t.duplicates, t.redelivered, t.deadLettered], [600, 2, 2, 5]);
    const [{ count }] = await db.sql`select count(*)::int from duplicate_attempts`;
    assert.equal(count, 2);
  } finally {
    assert.equal(await service.stop(), true);
  }
  assert.equal(await queue.count(), 0, "everything was acknowledged");
  const dead = await queue.takeDeadLetters();
  assert.deepEqual(dead.map((m) => m.content.toString()), malformed);
  assert.deepEqual(
    dead.map((m) => m.properties.headers?.[REJECT_REASON_HEADER]),
    ["invalid_json", "not_an_object", "missing_field", "unknown_choice", "invalid_field"],
  );
  for (const m of dead) assert.ok(String(m.properties.headers?.[REJECT_DETAIL_HEADER]).length > 5);
});

Deno.test("service: a batch gathering behind a commit in flight closes at BATCH_TIMEOUT_SECONDS", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const service = await startService(testConfig(db, queue, { BATCH_SIZE: "1000", BATCH_TIMEOUT_SECONDS: "0.3" }));
  try {
    {
      await using _lock = await lockLaw(db.sql, "L1");
      await queue.publish([seedVote(1, "L1", "oui")]);
      await waitUntil(() => service.aggregator.status().inflight_batches === 1, "the first vote's commit is blocked");
      const published = performance.now();
      await queue.publish([seedVote(2, "L1", "oui")]);
      await waitUntil(() => service.aggregator.status().inflight_batches === 2, "the second batch closed", 5000, 5);
      const elapsed = performance.now() - published;
      assert.ok(elapsed >= 290, `closed after ${elapsed} ms, before the batch timeout`);
      assert.ok(elapsed < 1500, `closed after ${elapsed} ms`);
      assert.equal(service.aggregator.totals.counted, 0, "nothing committed while the row is locked");
    }
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.counted === 2);
    assert.deepEqual(await results(db.sql), { L1: [2, 0] });
  } finally {
    await service.stop();
  }
});

Deno.test("service: shutdown commits and acknowledges what is batched", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const service = await startService(testConfig(db, queue, { BATCH_SIZE: "1000", BATCH_TIMEOUT_SECONDS: "600" }));
  let stopped = false;
  try {
    const lock = await lockLaw(db.sql, "L1");
    // The first vote's commit waits on the lock; the next ten gather behind it until the shutdown.
    await queue.publish([seedVote(100, "L1", "oui")]);
    await waitUntil(() => service.aggregator.status().inflight_batches === 1, "the first commit is blocked");
    await queue.publish(Array.from({ length: 10 }, (_, i) => seedVote(i, "L1", "non")));
    await waitUntil(() => service.aggregator.status().open_batch_messages === 10, "10 votes are batched");
    const stopping = service.stop();
    await waitUntil(() => service.aggregator.state === "draining", "draining");
    assert.equal(service.aggregator.totals.counted, 0, "nothing committed before the shutdown");
    await lock[Symbol.asyncDispose]();
    assert.equal(await stopping, true);
    stopped = true;
    assert.deepEqual(await results(db.sql), { L1: [1, 10] });
    assert.equal(await queue.count(), 0, "acknowledged before the connection closed");
  } finally {
    if (!stopped) await service.stop();
  }
});

Deno.test("service: a database that never answers fails the start at STARTUP_TIMEOUT_SECONDS with a clear error", async () => {
  await using queue = await createTestQueue();
  const started = performance.now();
  await assert.rejects(
    startService(
      testConfig({ url: "postgres://postgres@127.0.0.1:1/nowhere" }, queue, { STARTUP_TIMEOUT_SECONDS: "1" }),
    ),
    /^Error: Start-up did not finish within 1 s \(STARTUP_TIMEOUT_SECONDS\): database: starting: cannot connect to PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:1\/nowhere: .*ECONNREFUSED/,
  );
  assert.ok(performance.now() - started < 3000, "it gives up at the deadline");
});

Deno.test("service: an existing plain queue (the seed's) is used as it is", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue({ declare: false });
  await queue.channel.assertQueue(queue.name, { durable: true });
  await queue.publish([seedVote(1, "L1", "oui"), "garbage"]);
  const service = await startService(testConfig(db, queue));
  try {
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === 2);
    assert.deepEqual(await results(db.sql), { L1: [1, 0] });
  } finally {
    await service.stop();
  }
  assert.equal((await queue.takeDeadLetters()).length, 1);
});

Deno.test("aggregator: messages redelivered after a lost acknowledgement are not counted twice", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const votes = Array.from({ length: 40 }, (_, i) => seedVote(i, `L${i % 2}`, "oui"));
  await queue.publish(votes);

  const sql = testPool(db.url);
  await migrate(sql);
  const aggregatorRef: { current?: Aggregator } = {};
  const consumer = new BrokerSession({
    urls: [RABBITMQ_URL],
    queue: queue.name,
    prefetch: 100,
    queueType: "classic",
    deliveryLimit: 20,
    onDelivery: (d) => aggregatorRef.current!.receive(d),
  });
  // The first session's acknowledgements are lost, as if the process died right after its commit.
  const broker: Broker = {
    get session() {
      return consumer.session;
    },
    get connected() {
      return consumer.connected;
    },
    get consuming() {
      return consumer.consuming;
    },
    ack: (session, tag) => session === 1 ? false : consumer.ack(session, tag),
    deadLetter: (d, r) => consumer.deadLetter(d, r),
    setPaused: (paused) => consumer.setPaused(paused),
    reconnect: () => consumer.reconnect(),
  };
  const aggregator = new Aggregator({
    broker,
    writer: new VoteWriter(sql),
    metrics: createMetrics(false),
    batchSize: 10,
    batchTimeoutMs: 50,
  });
  aggregatorRef.current = aggregator;
  try {
    await consumer.start();
    await waitForEvent(aggregator, "acked", () => aggregator.totals.counted === 40);
    assert.equal(consumer.session, 1);
    await consumer.reconnect();
    await waitForEvent(aggregator, "acked", () => aggregator.totals.redelivered === 40);
    assert.ok(consumer.session >= 2, "the messages came back on a new connection");
    assert.deepEqual(await results(db.sql), { L0: [20, 0], L1: [20, 0] });
    assert.equal(aggregator.totals.counted, 40);
    assert.equal(aggregator.totals.duplicates, 0);
    await waitUntil(async () => (await queue.count()) === 0, "the queue is empty");
  } finally {
    await aggregator.drain(5000);
    await consumer.close();
    await sql.end({ timeout: 1 });
  }
});

Deno.test("service: SHUTDOWN_TIMEOUT_SECONDS=0 on an idle service is a clean stop, exit 0", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  await using service = await spawnService(serviceEnv(db, queue, { SHUTDOWN_TIMEOUT_SECONDS: "0" }));
  await waitUntil(async () => (await service.status()).broker_connected, "the service is connected");
  assert.equal(await service.stop("SIGTERM"), 0, service.output());
});
