/**
 * The fault suite: the service runs as a separate process
 * (`spawnService`) against the real RabbitMQ and PostgreSQL of this machine,
 * each case with its own database and queue, and every case ends by checking
 * the exact outcome: `vote_results` equal to the distinct valid votes,
 * `duplicate_attempts` equal to the duplicate attempts sent, every malformed
 * message in the DLQ, and nothing left in the queue, ready or unacknowledged.
 *
 * Cases that restart a whole server (RabbitMQ's app, PostgreSQL's cluster)
 * disturb everyone else on the machine, so they run only with
 * `FAULT_RESTARTS=1` (CI sets it). Everything else injects faults that touch
 * only the case's own connections: `rabbitmqctl close_connection`, deleting
 * the case's own exchange or queue, a TCP proxy in front of PostgreSQL that
 * the case cuts, SIGKILL of the service.
 *
 * Dead-lettering is at-least-once: a service killed (or disconnected) after a
 * malformed message was published to the DLQ but before it was acknowledged
 * gets it again and dead-letters it again. The cases assert that every
 * malformed message is in the DLQ at least once and that nothing else is.
 *
 * Run: `deno test --allow-net --allow-env --allow-read --allow-run --allow-write=/tmp tests/system/faults_test.ts`
 * (`deno task test`'s permissions; `--allow-all` works too), with `FAULT_RESTARTS=1` for the restarts.
 * `FAULT_TRACE=1` prints each case's steps and waits; `FAULT_TRACE=output` also the services' logs.
 * Needs `rabbitmqctl`, `ss`, and for the restarts `pg_ctlcluster` and `pg_isready`, on PATH.
 *
 * @module
 */

import assert from "node:assert/strict";
import { REJECT_DETAIL_HEADER, REJECT_REASON_HEADER } from "../../lib/broker/dead_letter.ts";
import { TcpProxy, viaPort } from "../support/proxy.ts";
import {
  brokerChannelsOf,
  brokerConnectionOf,
  closeBrokerConnection,
  createTestDatabase,
  createTestQueue,
  ensurePostgres,
  ensureRabbitMQ,
  FAULT_RESTARTS,
  pgctl,
  type QueueInfo,
  queueInfo,
  rabbitmqctl,
  results,
  type TestDatabase,
  type TestQueue,
  untilQueueSettled,
  withChannel,
} from "../support/servers.ts";
import { admin, call, metric, rssMbOf, serviceEnv, type ServiceProcess, spawnService } from "../support/service.ts";
import {
  addResults,
  assertDeadLetters,
  assertExactOutcome,
  buildMix,
  mergeContents,
  type Mix,
  seededRandom,
  seedVote,
  sha256,
} from "../support/votes.ts";
import { Deadline, delay, withOutputOnFailure } from "../support/wait.ts";

/** What a case gets: its own database and queue, a deadline, and a way to start service processes. */
interface Case {
  db: TestDatabase;
  queue: TestQueue;
  deadline: Deadline;
  /** Starts a service process on the case's queue and database (killed at the end of the case if still running). */
  spawn(overrides?: Record<string, string>): Promise<ServiceProcess>;
}

/** A case of the suite, bounded by `budgetMs`; `restarts` cases run only with FAULT_RESTARTS=1. */
function faultCase(
  name: string,
  budgetMs: number,
  fn: (c: Case) => Promise<void>,
  options: { restarts?: boolean } = {},
): void {
  Deno.test({
    name: `faults: ${name}`,
    ignore: options.restarts === true && !FAULT_RESTARTS,
    async fn() {
      const deadline = new Deadline(name, budgetMs);
      await using db = await createTestDatabase();
      await using queue = await createTestQueue({ declare: false, prefix: "votes_fault" });
      const services: ServiceProcess[] = [];
      try {
        await withOutputOnFailure(deadline, () => services, () =>
          fn({
            db,
            queue,
            deadline,
            async spawn(overrides = {}) {
              const service = await spawnService(serviceEnv(db, queue, overrides), {
                timeoutMs: Math.min(30_000, deadline.remaining()),
              });
              services.push(service);
              deadline.step(`service ${services.length - 1} started (pid ${service.pid})`);
              return service;
            },
          }));
      } finally {
        for (const service of services) await service[Symbol.asyncDispose]();
      }
    },
  });
}

/** Resolves once the service has taken `n` messages in total (its /status). */
async function untilTaken(c: Case, service: ServiceProcess, n: number, timeoutMs?: number): Promise<void> {
  let taken = -1;
  await c.deadline.until(async () => (taken = (await service.status()).totals.messages) >= n, `${n} messages taken`, {
    timeoutMs,
    intervalMs: 20,
    describe: () => `${taken} taken`,
  });
}

/** Resolves once the service has opened a connection to RabbitMQ after the first (broker_reconnects_total). */
async function untilReconnected(c: Case, service: ServiceProcess, atLeast: number): Promise<void> {
  await c.deadline.until(
    async () =>
      (await metric(service, "broker_reconnects_total")) >= atLeast && (await service.status()).broker_connected,
    `reconnected to RabbitMQ (${atLeast} reconnect(s))`,
  );
}

/** Stops a service with SIGTERM and asserts the graceful exit (everything received committed and acknowledged). */
async function stopCleanly(service: ServiceProcess): Promise<void> {
  assert.equal(await service.stop("SIGTERM"), 0, "exit 0: everything received was committed and acknowledged");
  assert.doesNotMatch(service.output(), /Unexpected error/);
}

/** The prefetch of {@link MID_DRAIN}: at most this many messages held unacknowledged. */
const MID_DRAIN_PREFETCH = 60;
/** Small batches and prefetch, so that a fault lands mid-drain. */
const MID_DRAIN = { BATCH_SIZE: "20", RABBITMQ_PREFETCH_COUNT: String(MID_DRAIN_PREFETCH) };

/** Declares the case's queue, publishes `bodies` and starts a service with `overrides`. */
async function publishAndSpawn(
  c: Case,
  bodies: string[],
  overrides: Record<string, string> = {},
): Promise<ServiceProcess> {
  await c.queue.declare();
  await c.queue.publish(bodies);
  return await c.spawn(overrides);
}

/** {@link publishAndSpawn} with `mix`, then waits until the service has drained the queue. */
async function drained(c: Case, mix: Mix, overrides: Record<string, string> = {}): Promise<ServiceProcess> {
  const service = await publishAndSpawn(c, mix.bodies, overrides);
  await untilQueueSettled(c.deadline, c.queue.name);
  return service;
}

/** Asserts the exact outcome of a case's two parts, `first` then `second`, and stops `service` cleanly. */
async function assertBothCounted(c: Case, first: Mix, second: Mix, service: ServiceProcess): Promise<void> {
  await assertExactOutcome(c.db.sql, addResults(first.expected, second.expected), mergeContents(first, second));
  await stopCleanly(service);
}

// ---------------------------------------------------------------------------
// 1. Broker faults

faultCase(
  "broker: the server closes the connection mid-drain; the service reconnects and counts exactly",
  60_000,
  async (c) => {
    const mix = buildMix({ valid: 20_000, duplicates: 100, copies: 100, malformed: 30, seed: 101 });
    const service = await publishAndSpawn(c, mix.bodies, MID_DRAIN);
    await c.deadline.until(async () => (await service.status()).broker_connected, "connected to RabbitMQ");
    const connection = await brokerConnectionOf(service.pid);
    await untilTaken(c, service, 1000);

    await closeBrokerConnection(connection);
    const atClose = (await service.status()).totals.messages;
    assert.ok(atClose < mix.bodies.length, `closed mid-drain (${atClose} of ${mix.bodies.length} taken)`);
    await untilReconnected(c, service, 1);

    const settled = await untilQueueSettled(c.deadline, c.queue.name);
    assert.equal(settled.consumers, 1, "consuming again on the new connection");
    await assertExactOutcome(c.db.sql, mix.expected, mix.contents);
    const { totals } = await service.status();
    await stopCleanly(service);
    const doubles = assertDeadLetters(await c.queue.takeDeadLetters(), mix.malformed);
    console.log(`    close at ${atClose} taken; redelivered no-ops ${totals.redelivered}; DLQ doubles ${doubles}`);
  },
);

faultCase("broker: a paused service stays paused across a reconnect, and resumes on demand", 45_000, async (c) => {
  const first = buildMix({ valid: 500, malformed: 5, seed: 201 });
  const service = await drained(c, first);

  const paused = await admin(service, "/pause");
  assert.deepEqual([paused.status, paused.body.state], [200, "paused"]);
  await closeBrokerConnection(await brokerConnectionOf(service.pid));
  await untilReconnected(c, service, 1);
  const status = await service.status();
  assert.equal(status.state, "paused");
  assert.equal((await c.queue.info()).consumers, 0, "no consumer on the new connection: still paused");

  const second = buildMix({ valid: 500, malformed: 5, voterBase: 100_000, seed: 202 });
  await c.queue.publish(second.bodies);
  const waiting = await c.queue.info();
  assert.deepEqual([waiting.ready, waiting.unacked, waiting.consumers], [second.bodies.length, 0, 0]);
  const ready = await call(service, "/readyz");
  assert.deepEqual([ready.status, ready.body.state, ready.body.broker], [200, "paused", "up"]);
  assert.deepEqual(await results(c.db.sql), first.expected, "nothing of the second part counted while paused");

  const resumed = await admin(service, "/resume");
  assert.deepEqual([resumed.status, resumed.body.state], [200, "running"]);
  const settled = await untilQueueSettled(c.deadline, c.queue.name);
  assert.equal(settled.consumers, 1);
  await assertBothCounted(c, first, second, service);
  assertDeadLetters(await c.queue.takeDeadLetters(), new Map([...first.malformed, ...second.malformed]));
});

faultCase(
  "broker: a channel error (dead-letter exchange deleted) reconnects and re-declares the topology",
  45_000,
  async (c) => {
    const first = buildMix({ valid: 2000, seed: 301 });
    const service = await drained(c, first, MID_DRAIN);

    // The next dead-letter publish goes to an exchange that no longer exists: the broker closes the channel (404).
    await withChannel((channel) => channel.deleteExchange(c.queue.dlx));
    const second = buildMix({ valid: 2000, malformed: 10, voterBase: 100_000, shuffle: false, seed: 302 });
    await c.queue.publish(second.bodies);

    await untilReconnected(c, service, 1);
    await untilQueueSettled(c.deadline, c.queue.name);
    assert.match(service.output(), /Broker channel closed; reconnecting/, "the broker closed the channel (404)");
    await assertBothCounted(c, first, second, service);
    // Received again on the new connection, after the exchange and binding were declared again.
    const doubles = assertDeadLetters(await c.queue.takeDeadLetters(), second.malformed);
    assert.equal(doubles, 0, "the refused publish put nothing in the DLQ");
  },
);

faultCase(
  "broker: the consumer is cancelled (queue deleted); the service re-declares its topology and resumes",
  45_000,
  async (c) => {
    const first = buildMix({ valid: 2000, malformed: 10, seed: 401 });
    const service = await drained(c, first);
    assertDeadLetters(await c.queue.takeDeadLetters(), first.malformed);

    // Only the service declares them again: the test never does after this.
    await withChannel(async (channel) => {
      await channel.deleteExchange(c.queue.dlx);
      await channel.deleteQueue(c.queue.dlq);
      await channel.deleteQueue(c.queue.name);
    });
    await untilReconnected(c, service, 1);
    let info = await queueInfo(c.queue.name);
    await c.deadline.until(async () => (info = await queueInfo(c.queue.name))?.consumers === 1, "consuming again", {
      describe: () => JSON.stringify(info),
    });
    assert.equal(info?.arguments["x-dead-letter-exchange"], c.queue.dlx, "declared with its dead-letter arguments");
    assert.ok(await queueInfo(c.queue.dlq), "the DLQ declared again");
    assert.match(service.output(), /Consumer cancelled by the broker/);

    const second = buildMix({ valid: 2000, malformed: 10, voterBase: 100_000, seed: 402 });
    await c.queue.publish(second.bodies);
    await untilQueueSettled(c.deadline, c.queue.name);
    await assertBothCounted(c, first, second, service);
    assertDeadLetters(await c.queue.takeDeadLetters(), second.malformed);
  },
);

faultCase(
  "broker: the DLQ deleted while the service runs; malformed messages are not acknowledged into nowhere",
  45_000,
  async (c) => {
    const first = buildMix({ valid: 500, malformed: 5, seed: 451 });
    const service = await drained(c, first);
    assertDeadLetters(await c.queue.takeDeadLetters(), first.malformed);

    // The exchange stays; with its queue gone, a dead-letter publish is routed nowhere (and still confirmed).
    await withChannel((channel) => channel.deleteQueue(c.queue.dlq));
    const second = buildMix({ valid: 1000, malformed: 10, voterBase: 100_000, seed: 452 });
    await c.queue.publish(second.bodies);
    await untilTaken(c, service, first.bodies.length + second.bodies.length);
    await untilQueueSettled(c.deadline, c.queue.name);
    await assertBothCounted(c, first, second, service);
    assert.ok(await queueInfo(c.queue.dlq), "the DLQ was declared again before anything was dead-lettered into it");
    assertDeadLetters(await c.queue.takeDeadLetters(), second.malformed);
  },
);

faultCase(
  "broker: RabbitMQ restarted mid-drain (FAULT_RESTARTS)",
  120_000,
  async (c) => {
    const mix = buildMix({ valid: 30_000, duplicates: 100, copies: 100, malformed: 30, seed: 501 });
    const service = await publishAndSpawn(c, mix.bodies, MID_DRAIN);
    await untilTaken(c, service, 1000);
    try {
      await rabbitmqctl("stop_app");
      let down = { status: 0, body: {} as Record<string, unknown> };
      await c.deadline.until(
        async () => (down = await call(service, "/readyz")).status === 503 && down.body.broker === "down",
        "/readyz reports the broker down",
        { timeoutMs: 10_000, describe: () => JSON.stringify(down) },
      );
      const taken = (await service.status()).totals.messages;
      assert.ok(taken < mix.bodies.length, `the broker went down mid-drain (${taken} of ${mix.bodies.length} taken)`);
    } finally {
      await ensureRabbitMQ();
    }
    await untilReconnected(c, service, 1);
    await untilQueueSettled(c.deadline, c.queue.name);
    await assertExactOutcome(c.db.sql, mix.expected, mix.contents);
    await stopCleanly(service);
    assertDeadLetters(await c.queue.takeDeadLetters(), mix.malformed);
  },
  { restarts: true },
);

// ---------------------------------------------------------------------------
// 2. Database faults

faultCase(
  "database: unreachable beyond the retry budget; consumption stops, nothing unsafe is acked, it recovers",
  60_000,
  async (c) => {
    await using proxy = new TcpProxy(Number(new URL(c.db.url).port || 5432));
    const { mix, service } = await startViaProxy(c, proxy, 601, { RETRY_DELAY_SECONDS: "0.02" });
    assert.ok(proxy.open > 0, "the service reaches the database through the proxy");

    await proxy.cut();
    await c.deadline.until(async () => (await service.status()).database_failing, "the service gives up retrying");
    assert.equal((await service.status()).state, "degraded");
    const info = await untilConsumptionStops(c);
    const before = { info, committed: await committedVotes(c) };
    const errors = await metric(service, "aggregation_errors_total", { error_type: "database" });
    assert.ok(before.committed < mix.bodies.length, "the outage began mid-drain");
    assertNothingUnsafeAcked(mix.bodies.length, before.info, before.committed);
    const readiness = await call(service, "/readyz");
    assert.equal(readiness.status, 503);
    assert.equal(readiness.body.ready, false);
    assert.match(readiness.body.database, /^down/, "/readyz names the database");

    // Another failed attempt later, nothing has moved.
    await c.deadline.until(
      async () => (await metric(service, "aggregation_errors_total", { error_type: "database" })) > errors,
      "another attempt fails",
    );
    const later = { info: await c.queue.info(), committed: await committedVotes(c) };
    assert.deepEqual(
      [later.info.ready, later.info.unacked, later.info.consumers, later.committed],
      [before.info.ready, before.info.unacked, 0, before.committed],
      "consumption stays stopped and nothing is acknowledged while the database is unreachable",
    );

    await healAndRecover(c, proxy, service);
    const back = await call(service, "/readyz");
    assert.deepEqual([back.status, back.body.database, back.body.state], [200, "up", "running"]);
    assert.equal((await c.queue.info()).consumers, 1);
    await assertExactOutcome(c.db.sql, mix.expected, mix.contents);
    await stopCleanly(service);
  },
);

faultCase(
  "database: stops answering mid-commit (network partition); the service gives up on the hung commit, holds what it has, recovers",
  60_000,
  async (c) => {
    await using proxy = new TcpProxy(Number(new URL(c.db.url).port || 5432));
    const { mix, service } = await startViaProxy(c, proxy, 651, {
      RETRY_DELAY_SECONDS: "0.05",
      // Longest a batch's transaction may go unanswered before it counts as failed (proposed; see the report).
      COMMIT_TIMEOUT_SECONDS: "2",
    });

    // Packets stop: no error, no close, the commit in flight never gets an answer.
    await proxy.cut("stall");
    // Two attempts of 2 s each, plus slack; well under PostgreSQL's 10 s connect timeout, which would
    // otherwise end an attempt that happens to need a new connection (and hide a commit that hangs).
    await c.deadline.until(
      async () => (await service.status()).database_failing,
      "the service counts the unanswered commit as failed and stops consuming",
      { timeoutMs: 8_000 },
    );
    const readiness = await call(service, "/readyz");
    assert.equal(readiness.status, 503);
    assert.match(readiness.body.database, /^down/, "/readyz names the database");
    const info = await untilConsumptionStops(c);
    assertNothingUnsafeAcked(mix.bodies.length, info, await committedVotes(c));

    await healAndRecover(c, proxy, service); // the partition heals: what was held in flight arrives
    await assertExactOutcome(c.db.sql, mix.expected, mix.contents);
    await stopCleanly(service);
  },
);

/**
 * The database-fault cases' start: 4,000 distinct valid votes published (so each acknowledged message is exactly
 * one vote_audit row), a service whose database connections go through `proxy` ({@link MID_DRAIN}, two attempts
 * a commit, plus `overrides`), and 400 of them taken.
 */
async function startViaProxy(
  c: Case,
  proxy: TcpProxy,
  seed: number,
  overrides: Record<string, string>,
): Promise<{ mix: Mix; service: ServiceProcess }> {
  const mix = buildMix({ valid: 4000, seed });
  const service = await publishAndSpawn(c, mix.bodies, {
    DATABASE_URL: viaPort(c.db.url, proxy.port),
    ...MID_DRAIN,
    MAX_RETRY_ATTEMPTS: "2",
    ...overrides,
  });
  await untilTaken(c, service, 400);
  return { mix, service };
}

/** Resolves once the case's queue has no consumer, with the broker's counts then. */
async function untilConsumptionStops(c: Case): Promise<QueueInfo> {
  let info = await c.queue.info();
  await c.deadline.until(async () => (info = await c.queue.info()).consumers === 0, "consumption stops", {
    describe: () => JSON.stringify(info),
  });
  return info;
}

/** The votes committed in the case's database (its vote_audit rows). */
async function committedVotes(c: Case): Promise<number> {
  const [{ n }] = await c.db.sql<{ n: number }[]>`select count(*)::int as n from vote_audit`;
  return n;
}

/** Asserts that of `total` messages no more were acknowledged than `committed`, and that some are held in flight. */
function assertNothingUnsafeAcked(total: number, info: QueueInfo, committed: number): void {
  const acked = total - info.ready - info.unacked;
  assert.ok(acked <= committed, `acknowledged ${acked} messages, only ${committed} committed`);
  assert.ok(info.unacked > 0 && info.unacked <= MID_DRAIN_PREFETCH, `held unacknowledged: ${info.unacked}`);
}

/** Restores `proxy`, then waits until the queue is settled and the service no longer reports the database failing. */
async function healAndRecover(c: Case, proxy: TcpProxy, service: ServiceProcess): Promise<void> {
  proxy.restore();
  await untilQueueSettled(c.deadline, c.queue.name);
  await c.deadline.until(async () => !(await service.status()).database_failing, "the service reports recovery");
}

faultCase(
  "database: PostgreSQL restarted mid-drain (FAULT_RESTARTS)",
  90_000,
  async (c) => {
    const mix = buildMix({ valid: 30_000, duplicates: 100, copies: 100, malformed: 30, seed: 701 });
    const service = await publishAndSpawn(c, mix.bodies, { ...MID_DRAIN, RETRY_DELAY_SECONDS: "0.2" });
    await untilTaken(c, service, 1000);
    try {
      assert.ok(await pgctl("restart", "--mode", "fast"), "pg_ctlcluster restart");
    } finally {
      await ensurePostgres();
    }
    await untilQueueSettled(c.deadline, c.queue.name);
    const failures = await metric(service, "aggregation_errors_total", { error_type: "database" }) +
      await metric(service, "aggregation_errors_total", { error_type: "database_retry" });
    assert.ok(failures > 0, "the restart made commits fail (it came mid-drain)");
    await assertExactOutcome(c.db.sql, mix.expected, mix.contents);
    await stopCleanly(service);
    assertDeadLetters(await c.queue.takeDeadLetters(), mix.malformed);
  },
  { restarts: true },
);

// ---------------------------------------------------------------------------
// 3. Crashes

faultCase("crashes: SIGKILL at random moments, five times, then a clean run: exact counts", 120_000, async (c) => {
  const seed = Date.now() % 100_000;
  const mix = buildMix({ valid: 25_000, laws: 12, duplicates: 300, copies: 300, malformed: 100, seed });
  await c.queue.declare();
  await c.queue.publish(mix.bodies);
  const rand = seededRandom(seed);
  const overrides = { BATCH_SIZE: "25", RABBITMQ_PREFETCH_COUNT: "100" };
  const kills: string[] = [];
  for (let run = 0; run < 5; run++) {
    const service = await c.spawn(overrides);
    // The random moment: after a random amount of progress (so that, however fast this machine is,
    // every kill lands mid-drain), then a random few milliseconds (so not just after a status poll).
    await untilTaken(c, service, 1 + Math.floor(rand() * 2000));
    const extra = Math.floor(rand() * 50);
    await delay(extra);
    const taken = (await service.status()).totals.messages;
    assert.notEqual(await service.stop("SIGKILL"), 0);
    const left = await c.queue.info();
    assert.ok(left.ready + left.unacked > 0, `kill ${run + 1} landed mid-drain`);
    kills.push(`${taken}+${extra} ms`);
    // Never counted twice, whenever the kill fell.
    const now = await results(c.db.sql);
    for (const [law, [oui, non]] of Object.entries(now)) {
      assert.ok(
        oui <= mix.expected[law][0] && non <= mix.expected[law][1],
        `${law} not over-counted after kill ${run + 1}`,
      );
    }
  }

  const service = await c.spawn(overrides);
  await untilQueueSettled(c.deadline, c.queue.name, 60_000);
  await stopCleanly(service);
  await assertExactOutcome(c.db.sql, mix.expected, mix.contents);
  const doubles = assertDeadLetters(await c.queue.takeDeadLetters(), mix.malformed);
  console.log(`    seed ${seed}; killed at (taken+ms) ${kills.join(", ")}; malformed dead-lettered twice: ${doubles}`);
});

// ---------------------------------------------------------------------------
// 4. Several instances

faultCase(
  "instances: three drain one queue together, one is SIGKILLed: exact counts, no deadlock, nothing stuck",
  90_000,
  async (c) => {
    const mix = buildMix({ valid: 15_000, laws: 30, duplicates: 200, copies: 200, malformed: 30, seed: 901 });
    await c.queue.declare();
    await c.queue.publish(mix.bodies);
    const overrides = { BATCH_SIZE: "50", RABBITMQ_PREFETCH_COUNT: "100" };
    // Started at once: their migrations race for the advisory lock too.
    const services = await Promise.all([c.spawn(overrides), c.spawn(overrides), c.spawn(overrides)]);
    const [a, victim, b] = services;
    let sum = 0;
    await c.deadline.until(
      async () => {
        const taken = await Promise.all(services.map(async (s) => (await s.status()).totals.messages));
        sum = taken.reduce((x, y) => x + y, 0);
        return sum >= 3000 && taken.every((t) => t > 0);
      },
      "all three are draining",
      { describe: () => `${sum} taken` },
    );
    assert.notEqual(await victim.stop("SIGKILL"), 0);
    const midway = await c.queue.info();
    assert.ok(midway.ready + midway.unacked > 0, "killed mid-drain");

    const settled = await untilQueueSettled(c.deadline, c.queue.name);
    assert.equal(settled.consumers, 2, "the two survivors still consume");
    const survivors = await Promise.all([a.status(), b.status()]);
    for (const s of survivors) assert.ok(s.totals.messages > 0, "each survivor took its share");
    await stopCleanly(a);
    await stopCleanly(b);
    for (const s of services) assert.doesNotMatch(s.output(), /deadlock/i, `no deadlock in the output of ${s.pid}`);
    const [{ deadlocks }] = await c.db.sql<{ deadlocks: number }[]>`
    select deadlocks::int from pg_stat_database where datname = current_database()`;
    assert.equal(deadlocks, 0, "PostgreSQL detected no deadlock in this database");
    await assertExactOutcome(c.db.sql, mix.expected, mix.contents);
    const after = await c.queue.info();
    assert.deepEqual([after.ready, after.unacked, after.consumers], [0, 0, 0]);
    assertDeadLetters(await c.queue.takeDeadLetters(), mix.malformed);
  },
);

// ---------------------------------------------------------------------------
// 5. Backlog

faultCase(
  "backlog: memory is bounded by prefetch and batch size, not by the backlog (50k then 200k)",
  150_000,
  async (c) => {
    await c.queue.declare();
    const prefetch = 200;
    const overrides = { BATCH_SIZE: "100", RABBITMQ_PREFETCH_COUNT: String(prefetch) };
    let expected: Record<string, [number, number]> = {};

    const drain = async (count: number, voterBase: number) => {
      const laws = 10;
      const part: Record<string, [number, number]> = {};
      for (let start = 0; start < count; start += 20_000) {
        const bodies: string[] = [];
        for (let i = start; i < Math.min(count, start + 20_000); i++) {
          const law = `L${i % laws}`;
          const choice = i % 3 === 0 ? "non" : "oui";
          bodies.push(seedVote(voterBase + i, law, choice));
          part[law] ??= [0, 0];
          part[law][choice === "oui" ? 0 : 1] += 1;
        }
        await c.queue.publish(bodies);
      }
      expected = addResults(expected, part);
      const service = await c.spawn(overrides);
      const samples: { taken: number; rssMb: number }[] = [];
      let channelChecked = false;
      await c.deadline.until(
        async () => {
          const taken = (await service.status()).totals.messages;
          samples.push({ taken, rssMb: await rssMbOf(service) });
          if (!channelChecked && taken > count / 4) {
            // The broker's own view of the service's channel: at most `prefetch` messages in the process.
            const [channel] = await brokerChannelsOf(service.pid);
            assert.equal(channel.prefetch_count, prefetch);
            assert.ok(channel.messages_unacknowledged <= prefetch, `${channel.messages_unacknowledged} unacknowledged`);
            channelChecked = true;
          }
          return taken >= count;
        },
        `${count} messages drained`,
        { intervalMs: 100 },
      );
      samples.push({ taken: count, rssMb: await rssMbOf(service) });
      await stopCleanly(service);
      assert.ok(channelChecked);
      const peak = (from: number, to: number) =>
        Math.max(...samples.filter((s) => s.taken >= from && s.taken < to).map((s) => s.rssMb));
      return { peakMb: peak(0, Infinity), firstHalf: peak(0, count / 2), secondHalf: peak(count / 2, Infinity) };
    };

    const small = await drain(50_000, 0);
    const big = await drain(200_000, 1_000_000);
    const f = (n: number) => n.toFixed(0);
    console.log(
      `    peak RSS (sampled every 100 ms): 50k backlog ${f(small.peakMb)} MB, 200k backlog ${f(big.peakMb)} MB ` +
        `(200k: first half ${f(big.firstHalf)} MB, second half ${f(big.secondHalf)} MB)`,
    );
    assert.ok(big.peakMb < 200, `peak RSS ${f(big.peakMb)} MB with a 200k backlog, bound 200 MB`);
    assert.ok(
      big.peakMb - small.peakMb < 40,
      `a 4x backlog added ${f(big.peakMb - small.peakMb)} MB to the peak (50k: ${f(small.peakMb)}, 200k: ${
        f(big.peakMb)
      })`,
    );
    assert.ok(
      big.secondHalf - big.firstHalf < 32,
      `RSS kept growing while draining: ${f(big.firstHalf)} MB then ${f(big.secondHalf)} MB`,
    );
    assert.deepEqual(await results(c.db.sql), expected);
    await untilQueueSettled(c.deadline, c.queue.name);
  },
);

// ---------------------------------------------------------------------------
// 6. Poison messages

faultCase(
  "poison: votes the database would refuse are dead-lettered once with the reason, the rest counted",
  45_000,
  async (c) => {
    const mix = buildMix({ valid: 1000, seed: 1101 });
    const poison = [
      JSON.stringify({ vote_hash: sha256("poison-nul-law"), law_id: "L\u000001", choice: "oui", timestamp: null }),
      JSON.stringify({
        vote_hash: sha256("poison-zone"),
        law_id: "L01",
        choice: "non",
        timestamp: "2026-11-22T10:00:00+99",
      }),
      JSON.stringify({ vote_hash: sha256("poison-nul-citizen"), citizen_id: "c\u0000", law_id: "L02", choice: "oui" }),
    ];
    const bodies = [...mix.bodies];
    poison.forEach((p, i) => bodies.splice(100 + i * 300, 0, p));
    const service = await publishAndSpawn(c, bodies, { BATCH_SIZE: "50", RABBITMQ_PREFETCH_COUNT: "150" });

    await untilQueueSettled(c.deadline, c.queue.name);
    await assertExactOutcome(c.db.sql, mix.expected, mix.contents);
    await stopCleanly(service);
    const dead = await c.queue.takeDeadLetters();
    assert.deepEqual(
      dead.map((m) => m.content.toString()).sort(),
      [...poison].sort(),
      "each poison vote once, nothing else",
    );
    // The parser refuses what PostgreSQL would (one dead-letter, no bisection of the batch);
    // the database's own refusal and its isolation are tested in tests/database/writer_test.ts.
    for (const m of dead) {
      assert.equal(m.properties.headers?.[REJECT_REASON_HEADER], "invalid_field");
      assert.match(String(m.properties.headers?.[REJECT_DETAIL_HEADER]), /NUL character|ISO 8601/);
    }
  },
);

// ---------------------------------------------------------------------------
// 7. Quorum queues

faultCase(
  "quorum: declared with a delivery limit; counts exactly; the broker dead-letters a message redelivered too often",
  60_000,
  async (c) => {
    const limit = 2;
    const service = await c.spawn({ RABBITMQ_QUEUE_TYPE: "quorum", RABBITMQ_DELIVERY_LIMIT: String(limit) });
    let info = await queueInfo(c.queue.name);
    await c.deadline.until(async () => (info = await queueInfo(c.queue.name))?.consumers === 1, "consuming", {
      describe: () => JSON.stringify(info),
    });
    assert.equal(info!.type, "quorum");
    assert.equal(info!.arguments["x-delivery-limit"], limit);
    assert.equal(info!.arguments["x-dead-letter-exchange"], c.queue.dlx);

    const mix = buildMix({ valid: 3000, duplicates: 30, copies: 30, malformed: 10, seed: 1201 });
    await c.queue.publish(mix.bodies);
    await untilTaken(c, service, mix.bodies.length);
    await untilQueueSettled(c.deadline, c.queue.name);
    await assertExactOutcome(c.db.sql, mix.expected, mix.contents);
    assert.equal(assertDeadLetters(await c.queue.takeDeadLetters(), mix.malformed), 0);

    // A consumer that returns the same message again and again (as one that crashes on it would):
    // the broker stops redelivering it after `limit` redeliveries and dead-letters it.
    assert.equal((await admin(service, "/pause")).status, 200);
    assert.equal((await c.queue.info()).consumers, 0, "the service paused");
    const poison = seedVote(9_999_999, "LQ", "oui");
    await c.queue.publish([poison]);
    const deliveries: unknown[] = [];
    await withChannel(async (channel) => {
      await channel.prefetch(1);
      const { consumerTag } = await channel.consume(c.queue.name, (m) => {
        if (m === null) return;
        deliveries.push(m.properties.headers?.["x-delivery-count"] ?? 0);
        channel.nack(m, false, true);
      });
      await c.deadline.until(async () => (await queueInfo(c.queue.dlq))?.readyNow === 1, "the broker dead-letters it");
      await channel.cancel(consumerTag);
    });
    assert.deepEqual(deliveries, [0, 1, 2], `delivered ${limit + 1} times, then dead-lettered`);
    const [dead] = await c.queue.takeDeadLetters();
    assert.equal(dead.content.toString(), poison);
    assert.equal(dead.properties.headers?.["x-first-death-reason"], "delivery_limit");

    assert.equal((await admin(service, "/resume")).status, 200);
    assert.equal((await c.queue.info()).consumers, 1, "the service resumed");
    const settled = await untilQueueSettled(c.deadline, c.queue.name);
    assert.equal(settled.ready + settled.unacked, 0);
    assert.deepEqual(await results(c.db.sql), mix.expected, "the dead-lettered message was not counted");
    await stopCleanly(service);
  },
);
