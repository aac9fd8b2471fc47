/**
 * Hostile input and hostile networks, against the service as a
 * separate process on the real broker and database: large bodies at the
 * default prefetch must not blow its memory; a broker or a database that
 * accepts TCP and then never answers must be timed out, retried, and must not
 * keep the service from stopping on SIGTERM.
 *
 * Run: `deno test --allow-net --allow-env --allow-read --allow-run --allow-write=/tmp tests/system/hostile_test.ts`
 *
 * @module
 */

import assert from "node:assert/strict";
import { REJECT_REASON_HEADER } from "../../lib/broker/dead_letter.ts";
import { MIGRATION_LOCK_KEY } from "../../lib/database/migrations.ts";
import { peakRssMb } from "../support/process.ts";
import { TcpProxy, viaPort } from "../support/proxy.ts";
import {
  createTestDatabase,
  createTestQueue,
  POSTGRES_URL,
  RABBITMQ_URL,
  results,
  type TestDatabase,
  type TestQueue,
  untilQueueSettled,
} from "../support/servers.ts";
import { serviceEnv, type ServiceProcess, spawnService } from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { Deadline, withOutputOnFailure } from "../support/wait.ts";

const LARGE_MESSAGES = Number(Deno.env.get("HOSTILE_LARGE_MESSAGES") ?? 60);
const LARGE_BYTES = Number(Deno.env.get("HOSTILE_LARGE_BYTES") ?? 10 * 1024 * 1024);
const VOTES_BEHIND_EACH = 50;

Deno.test("hostile: 10 MB bodies at the default prefetch keep RSS under 300 MB; each is dead-lettered oversized, every vote behind them counted", async () => {
  const deadline = new Deadline("large bodies", 240_000);
  await using db = await createTestDatabase();
  await using queue = await createTestQueue({ prefix: "votes_h12_large" });
  const large = new Uint8Array(LARGE_BYTES).fill(0x78); // "xxx…": not JSON, and far over the limit
  const expected: Record<string, [number, number]> = {};
  let voter = 0;
  for (let i = 0; i < LARGE_MESSAGES; i++) {
    const votes = Array.from({ length: VOTES_BEHIND_EACH }, () => {
      const law = `L-BIG-${voter % 5}`;
      const choice = voter % 3 ? "oui" : "non";
      const entry = expected[law] ??= [0, 0];
      entry[choice === "oui" ? 0 : 1]++;
      return seedVote(voter++, law, choice);
    });
    await queue.publish([large, ...votes]);
  }
  deadline.step(`published ${LARGE_MESSAGES} × ${LARGE_BYTES} bytes and ${voter} votes`);

  const services: ServiceProcess[] = [];
  await withOutputOnFailure(deadline, () => services, async () => {
    // The production defaults that matter here: prefetch 3000, batches of 1000.
    const service = await spawnService(
      serviceEnv(db, queue, { RABBITMQ_PREFETCH_COUNT: "3000", BATCH_SIZE: "1000", MAX_INFLIGHT_BATCHES: "1" }),
    );
    services.push(service);
    try {
      await untilQueueSettled(deadline, queue.name, 180_000);
      const peak = peakRssMb(service.pid) ?? NaN;
      deadline.step(`peak RSS ${peak.toFixed(0)} MB`);
      console.log(
        `    peak RSS with ${LARGE_MESSAGES} × ${LARGE_BYTES} byte bodies at prefetch 3000: ${peak.toFixed(0)} MB`,
      );
      assert.deepEqual(await results(db.sql), expected, "every vote behind the large bodies counted, exactly");
      assert.ok(peak < 300, `peak RSS ${peak.toFixed(0)} MB, the bound is 300 MB`);
      assert.equal(await service.stop("SIGTERM"), 0);
    } finally {
      await service[Symbol.asyncDispose]();
    }
    const dead = await queue.takeDeadLetters();
    assert.equal(dead.length, LARGE_MESSAGES, "each large body dead-lettered once");
    for (const message of dead) {
      assert.equal(message.properties.headers?.[REJECT_REASON_HEADER], "oversized");
      assert.ok(message.content.byteLength <= 16 * 1024, `copy of ${message.content.byteLength} bytes: bounded`);
      assert.match(
        String(message.properties.headers?.["x-reject-body-truncated"]),
        new RegExp(`^${LARGE_BYTES} bytes; the first 16384 kept$`),
      );
    }
  });
});

/** A case with its own database and queue, a deadline, and the services it spawned killed at the end. */
async function hostileCase(
  name: string,
  budgetMs: number,
  fn: (c: { db: TestDatabase; queue: TestQueue; deadline: Deadline; services: ServiceProcess[] }) => Promise<void>,
): Promise<void> {
  const deadline = new Deadline(name, budgetMs);
  await using db = await createTestDatabase();
  await using queue = await createTestQueue({ prefix: "votes_h12" });
  const services: ServiceProcess[] = [];
  try {
    await withOutputOnFailure(deadline, () => services, () => fn({ db, queue, deadline, services }));
  } finally {
    for (const service of services) await service[Symbol.asyncDispose]();
  }
}

/** Resolves once the service's log holds `count` lines matching `pattern`. */
function untilLogged(deadline: Deadline, service: ServiceProcess, pattern: RegExp, count = 1): Promise<void> {
  const lines = () => service.output().split("\n").filter((line) => pattern.test(line)).length;
  return deadline.until(() => lines() >= count, `${count} log line(s) matching ${pattern}`, {
    describe: () => `${lines()} so far`,
  });
}

const BROKER_TIMEOUT = /timed out after 500 ms waiting for the TCP connection, TLS or the AMQP handshake/;
const DATABASE_TIMEOUT =
  /Cannot connect to PostgreSQL .*timed out after 500 ms waiting for the TCP connection, TLS or PostgreSQL's answer \(CONNECT_TIMEOUT_SECONDS\); retrying/;
const RABBITMQ_PORT = Number(new URL(RABBITMQ_URL).port || 5672);
const POSTGRES_PORT = Number(new URL(POSTGRES_URL).port || 5432);

Deno.test("hostile: a broker that accepts TCP and never answers is timed out and retried, then consumed from once it answers", async () => {
  await hostileCase("silent broker heals", 60_000, async ({ db, queue, deadline, services }) => {
    await using broker = new TcpProxy(RABBITMQ_PORT);
    await broker.cut("stall");
    const service = await spawnService(
      serviceEnv(db, queue, { RABBITMQ_URL: viaPort(RABBITMQ_URL, broker.port), CONNECT_TIMEOUT_SECONDS: "0.5" }),
    );
    services.push(service);
    await untilLogged(deadline, service, BROKER_TIMEOUT, 2);
    assert.ok(broker.open >= 2, `${broker.open} connection attempts held by the silent broker`);
    broker.restore();
    await untilLogged(deadline, service, /Connected to RabbitMQ/);
    await queue.publish([seedVote(1, "L-SILENT", "oui")]);
    await deadline.until(async () => (await results(db.sql))["L-SILENT"]?.[0] === 1, "the vote counted");
    assert.equal(await service.stopWithin(10_000), 0);
  });
});

for (const phase of ["connecting to RabbitMQ", "connecting to PostgreSQL"] as const) {
  Deno.test(`hostile: SIGTERM while ${phase} at a server that never answers exits at once with 0`, async () => {
    await hostileCase(`SIGTERM while ${phase}`, 60_000, async ({ db, queue, deadline, services }) => {
      const toBroker = phase === "connecting to RabbitMQ";
      await using silent = new TcpProxy(toBroker ? RABBITMQ_PORT : POSTGRES_PORT);
      await silent.cut("stall");
      const service = await spawnService(
        serviceEnv(db, queue, {
          ...(toBroker
            ? { RABBITMQ_URL: viaPort(RABBITMQ_URL, silent.port) }
            : { DATABASE_URL: viaPort(db.url, silent.port) }),
          CONNECT_TIMEOUT_SECONDS: "0.5",
        }),
        { waitHealthy: toBroker },
      );
      services.push(service);
      await untilLogged(deadline, service, toBroker ? BROKER_TIMEOUT : DATABASE_TIMEOUT, 2);
      const signalled = performance.now();
      assert.equal(await service.stopWithin(3000), 0, "nothing was consumed: exit 0");
      const ms = performance.now() - signalled;
      assert.ok(ms < 3000, `exited ${ms.toFixed(0)} ms after SIGTERM`);
      assert.match(service.output(), new RegExp(`Stopped on SIGTERM while ${phase}: nothing was consumed`));
    });
  });
}

Deno.test("hostile: SIGTERM while migrating (waiting for another instance's migration lock) exits at once with 0, nothing applied", async () => {
  await hostileCase("SIGTERM while migrating", 60_000, async ({ db, queue, deadline, services }) => {
    // Another instance migrating: it holds the lock every instance takes to migrate.
    const other = await db.sql.reserve();
    try {
      await other`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
      const service = await spawnService(serviceEnv(db, queue), { waitHealthy: false });
      services.push(service);
      await untilLogged(deadline, service, /Start-up: migrating/);
      await deadline.until(async () => {
        const [{ waiting }] = await db.sql<{ waiting: number }[]>`
          select count(*)::int as waiting from pg_stat_activity
          where datname = ${db.name} and wait_event_type = 'Lock' and query like '%pg_advisory_xact_lock%'`;
        return waiting > 0;
      }, "the service waits for the migration lock");
      const signalled = performance.now();
      assert.equal(await service.stopWithin(3000), 0, "nothing was consumed: exit 0");
      assert.ok(performance.now() - signalled < 3000);
      assert.match(service.output(), /Stopped on SIGTERM while migrating: nothing was consumed/);
      const [{ applied }] = await db.sql<{ applied: string | null }[]>`
        select to_regclass('schema_migrations')::text as applied`;
      assert.equal(applied, null, "the abandoned migration was rolled back");
    } finally {
      await other`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
      other.release();
    }
  });
});

Deno.test("hostile: SIGTERM while draining towards a broker gone silent exits within the bound, leaving the rest unacknowledged", async () => {
  await hostileCase("drain with a silent broker", 90_000, async ({ db, queue, deadline, services }) => {
    await using broker = new TcpProxy(RABBITMQ_PORT);
    const service = await spawnService(
      serviceEnv(db, queue, {
        RABBITMQ_URL: viaPort(RABBITMQ_URL, broker.port),
        SHUTDOWN_TIMEOUT_SECONDS: "1",
        BATCH_TIMEOUT_SECONDS: "0.05",
      }),
    );
    services.push(service);
    await untilLogged(deadline, service, /Connected to RabbitMQ/);
    await queue.publish([seedVote(1, "L-DRAIN", "oui")]);
    await deadline.until(async () => (await results(db.sql))["L-DRAIN"]?.[0] === 1, "the vote counted");
    await broker.cut("stall"); // the connection stays open, and nothing moves on it any more
    const signalled = performance.now();
    // 1 s of drain, then closing the channel and connection each bounded by 5 s.
    const code = await service.stopWithin(15_000);
    const ms = performance.now() - signalled;
    assert.ok(ms < 15_000, `exited ${ms.toFixed(0)} ms after SIGTERM`);
    assert.ok(code === 0 || code === 1, `exit ${code}`);
    assert.match(service.output(), /timed out after 5000 ms closing the broker connection/);
    deadline.step(`exit ${code} after ${ms.toFixed(0)} ms`);
  });
});
