/**
 * The service as a daemon, run as a real process with the database and the broker behind the tests' TCP
 * proxies: one stop request is one drain however many processes of its group receive it, start-up waits for
 * servers that are not up yet, readiness follows the servers within seconds while idle, counting resumes within
 * seconds of the network's return, and `POST /pause` answers at once in every state.
 *
 * @module
 */

import assert from "node:assert/strict";
import { TcpProxy, viaPort } from "../support/proxy.ts";
import {
  createTestDatabase,
  createTestQueue,
  POSTGRES_URL,
  RABBITMQ_URL,
  results,
  type TestDatabase,
  type TestQueue,
} from "../support/servers.ts";
import {
  admin,
  ADMIN_TOKEN,
  call,
  serviceEnv,
  type ServiceProcess,
  type SpawnOptions,
  spawnService,
} from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { delay, waitUntil } from "../support/wait.ts";

/** Signals this close to the first are copies of it (main.ts). */
const REPEAT_SIGNAL_MS = 1000;

const QUEUE_PREFIX = "daemon_votes";
const postgresPort = Number(new URL(POSTGRES_URL).port || 5432);
const rabbitmqPort = Number(new URL(RABBITMQ_URL).port || 5672);

/** A service process whose database and broker are reached through proxies of their own. */
interface ProxiedService extends AsyncDisposable {
  db: TestDatabase;
  queue: TestQueue;
  /** Between the service and PostgreSQL. */
  database: TcpProxy;
  /** Between the service and RabbitMQ. */
  broker: TcpProxy;
  service: ServiceProcess;
}

/**
 * Starts a service on a database and a queue of its own, both through proxies, and waits until it is ready;
 * unless `before` is given, which runs once the proxies exist and before the service starts (to cut one).
 */
async function proxiedService(
  overrides: Record<string, string> = {},
  options: SpawnOptions & { before?: (proxies: { database: TcpProxy; broker: TcpProxy }) => Promise<void> } = {},
): Promise<ProxiedService> {
  const stack = new AsyncDisposableStack();
  try {
    const db = stack.use(await createTestDatabase());
    const queue = stack.use(await createTestQueue({ prefix: QUEUE_PREFIX }));
    const database = stack.use(new TcpProxy(postgresPort));
    const broker = stack.use(new TcpProxy(rabbitmqPort));
    await options.before?.({ database, broker });
    const env = serviceEnv({ url: viaPort(db.url, database.port) }, queue, {
      RABBITMQ_URL: viaPort(RABBITMQ_URL, broker.port),
      ...overrides,
    });
    const service = stack.use(await spawnService(env, { waitHealthy: !options.before, ...options }));
    if (!options.before) await untilReadiness(service, null, 20_000);
    const moved = stack.move();
    return { db, queue, database, broker, service, [Symbol.asyncDispose]: () => moved.disposeAsync() };
  } catch (error) {
    await stack.disposeAsync();
    throw error;
  }
}

/** `count` votes for `law`, voters from `first` on. */
function votesFor(law: string, count: number, first = 0): string[] {
  return Array.from({ length: count }, (_, i) => seedVote(first + i, law, "oui"));
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`daemon: ${signal} to deno task start's whole process group mid-drain is one drain, exit 0`, async () => {
    await using ctx = await proxiedService({}, { viaStartTask: true, ownProcessGroup: true });
    const { db, queue, database, service } = ctx;
    // A slow database: the drain's commit is still under way when the group's copies of the signal arrive.
    database.setLatency(250);
    const votes = Array.from({ length: 20 }, (_, i) => seedVote(i, "LAW-GROUP", i % 4 ? "oui" : "non"));
    await queue.publish(votes);
    await waitUntil(async () => {
      const { ready, unacked } = await queue.info();
      return ready === 0 && unacked > 0;
    }, "every vote delivered, some not acknowledged yet: a commit under way");

    assert.equal(await service.stopGroup(signal), 0, service.output());
    const output = service.output();
    assert.equal(output.match(new RegExp(`Stopping on ${signal}`, "g"))?.length, 1, output);
    assert.doesNotMatch(output, /again while/);
    assert.deepEqual(await results(db.sql), { "LAW-GROUP": [15, 5] }, "the open batch was committed");
    const info = await queue.info();
    assert.deepEqual([info.ready, info.unacked], [0, 0], "everything was acknowledged: nothing is redelivered");
  });
}

Deno.test("daemon: a second signal at least 1 s after the first stops at once, exit 1, nothing acknowledged", async () => {
  await using ctx = await proxiedService({}, { viaStartTask: true, ownProcessGroup: true });
  const { db, queue, database, service } = ctx;
  await database.cut();
  const votes = votesFor("LAW-TWICE", 10);
  await queue.publish(votes);
  await waitUntil(async () => (await queue.info()).unacked === votes.length, "every vote delivered");
  Deno.kill(-service.child.pid, "SIGTERM");
  await waitUntil(() => service.output().includes("Stopping on SIGTERM"), "the drain begins");
  // The drain cannot commit (the database is cut): it is still waiting when the operator insists.
  await delay(REPEAT_SIGNAL_MS);
  assert.equal(await service.stopGroup("SIGTERM"), 1, service.output());
  assert.match(service.output(), /SIGTERM again while draining: exiting now with 1/);
  database.restore();
  assert.deepEqual(await results(db.sql), {}, "nothing was committed");
  await waitUntil(async () => (await queue.info()).ready === votes.length, "every vote is back in the queue");
});

Deno.test("daemon: POST /pause answers within 1 s during a database outage; the batch stays unacknowledged until committed", async () => {
  await using ctx = await proxiedService();
  const { queue, database, service, db } = ctx;
  await database.cut();
  const votes = votesFor("LAW-PAUSE", 5);
  await queue.publish(votes);
  await waitUntil(async () => (await queue.info()).unacked === votes.length, "every vote delivered");

  const asked = performance.now();
  const paused = await call(service, "/pause", {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    signal: AbortSignal.timeout(5000),
  });
  const ms = performance.now() - asked;
  assert.ok(ms < 1000, `POST /pause answered in ${Math.round(ms)} ms`);
  assert.equal(paused.status, 200);
  assert.equal(paused.body.committed, false, "the database is down: nothing could be committed");
  assert.equal((await queue.info()).unacked, votes.length, "nothing was acknowledged");

  database.restore();
  await waitUntil(async () => (await results(db.sql))["LAW-PAUSE"]?.[0] === votes.length, "the batch is committed");
  await waitUntil(async () => (await queue.info()).unacked === 0, "and acknowledged");
  // The probe may say "unreachable" for up to a second after the commit went through: wait for it, not for a resume.
  await waitUntil(async () => (await service.status()).state !== "degraded", "the probe sees the database");
  const status = await service.status();
  assert.deepEqual(
    [status.state, status.consuming],
    ["paused", false],
    `the operator's pause holds: ${JSON.stringify(status)}`,
  );
  await queue.publish(votesFor("LAW-PAUSE", 3, 100));
  assert.equal((await admin(service, "/resume")).status, 200);
  await waitUntil(async () => (await results(db.sql))["LAW-PAUSE"]?.[0] === 8, "counting resumes");
});

/** GET /readyz and /status, one after the other. */
async function readiness(service: ServiceProcess) {
  const [readyz, status] = [await call(service, "/readyz"), await call(service, "/status")];
  assert.equal(readyz.status === 200, readyz.body.ready);
  return {
    status: readyz.status,
    reason: readyz.body.reason as string | null,
    state: readyz.body.state as string,
    statusReason: status.body.not_ready_reason as string | null,
  };
}

/** Waits at most `ms` until /readyz is 200 (`reason` null) or 503 with a reason matching `reason`. */
async function untilReadiness(service: ServiceProcess, reason: RegExp | null, ms = 5000): Promise<void> {
  let last = "";
  await waitUntil(
    async () => {
      const seen = await readiness(service);
      last = JSON.stringify(seen);
      // /status says the same as /readyz (both read at once would agree; read one after the other, they may race).
      if (reason === null) return seen.status === 200 && seen.statusReason === null;
      return seen.status === 503 && reason.test(seen.reason ?? "") && reason.test(seen.statusReason ?? "");
    },
    `/readyz ${reason === null ? "200" : `503 ${reason}`}`,
    ms,
    100,
  ).catch((error) => {
    throw new Error(`${error.message}; last seen ${last}`);
  });
}

/** Lines of the service's log matching `pattern`. */
function logged(service: ServiceProcess, pattern: RegExp): number {
  return service.output().split("\n").filter((line) => pattern.test(line)).length;
}

Deno.test("daemon: start-up waits for a database and a broker that are not up yet, serving /healthz, then consumes", async () => {
  await using ctx = await proxiedService({}, {
    before: async ({ database, broker }) => {
      await database.cut();
      await broker.cut();
    },
  });
  const { db, queue, database, broker, service } = ctx;
  const healthz = () => call(service, "/healthz").then(({ status }) => status, () => 0); // 0: not listening yet
  await waitUntil(async () => await healthz() === 200, "/healthz answers 200 while start-up waits");
  await untilReadiness(service, /^database: starting: cannot connect to PostgreSQL .*ECONNREFUSED/);
  assert.equal((await readiness(service)).state, "starting");
  const retried = /Cannot connect to PostgreSQL at .*; retrying in \d+ ms \(attempt \d+\)/;
  await waitUntil(() => logged(service, retried) >= 3, "three failures logged, each with the next delay");
  assert.equal((await admin(service, "/pause")).status, 503, "nothing to pause yet");

  database.restore();
  await untilReadiness(service, /^broker: down/, 10_000);
  const reconnecting = /Reconnecting to RabbitMQ node .* in \d+ ms \(attempt \d+\)/;
  await waitUntil(() => logged(service, reconnecting) >= 2, "broker failures logged, each with the next delay");
  await queue.publish(votesFor("LAW-LATE", 3));

  broker.restore();
  await waitUntil(async () => (await results(db.sql))["LAW-LATE"]?.[0] === 3, "the votes waiting are counted");
  assert.equal(service.exitCode, undefined, "still running");
});

Deno.test("daemon: STARTUP_TIMEOUT_SECONDS ends a start that waits too long with exit 1, naming what is missing", async () => {
  await using ctx = await proxiedService({ STARTUP_TIMEOUT_SECONDS: "2" }, {
    before: async ({ broker }) => await broker.cut(),
  });
  const { service } = ctx;
  const code = await service.exited;
  assert.equal(code, 1, service.output());
  assert.match(service.output(), /Start-up did not finish within 2 s \(STARTUP_TIMEOUT_SECONDS\): broker: down/);
});

Deno.test("daemon: while idle, a database or broker outage shows in /readyz within 5 s, and its end too", async () => {
  await using ctx = await proxiedService();
  const { database, broker, service } = ctx;

  await database.cut();
  await untilReadiness(service, /^database: no answer to the probe/);
  assert.equal((await readiness(service)).state, "degraded");
  database.restore();
  await untilReadiness(service, null);

  await database.cut("stall"); // a partition: nothing answers, nothing is refused
  await untilReadiness(service, /^database: no answer to the probe \(no answer to select 1 within \d+ ms\)/);
  database.restore();
  await untilReadiness(service, null);

  await broker.cut();
  await untilReadiness(service, /^broker: down/);
  broker.restore();
  await untilReadiness(service, null);
});

/**
 * An outage this long lets an exponential backoff grow to 16–30 s, so that the next attempt after the server's
 * return could come that late: a cap on the delay is what keeps it under 5 s.
 */
const LONG_OUTAGE_MS = 30_000;

Deno.test("daemon: after a long broker outage, counting resumes within 5 s of the broker's return", async () => {
  await using ctx = await proxiedService();
  const { db, queue, broker } = ctx;
  await broker.cut();
  await queue.publish(votesFor("LAW-BROKER", 5));
  await delay(LONG_OUTAGE_MS); // the outage itself: what is under test is the wait after it
  broker.restore();
  const restored = performance.now();
  await waitUntil(async () => (await results(db.sql))["LAW-BROKER"]?.[0] === 5, "counted", 5000, 100);
  assert.ok(performance.now() - restored < 5000);
});

Deno.test("daemon: after a long database outage, counting resumes within 5 s of the database's return", async () => {
  // One transaction a commit attempt: the delays between attempts are the outage's backoff alone.
  await using ctx = await proxiedService({ RETRY_DELAY_SECONDS: "1", MAX_RETRY_ATTEMPTS: "1" });
  const { db, queue, database, service } = ctx;
  await database.cut();
  await queue.publish(votesFor("LAW-DATABASE", 5));
  await untilReadiness(service, /^database: commits fail/);
  await delay(LONG_OUTAGE_MS); // the outage itself: what is under test is the wait after it
  database.restore();
  const restored = performance.now();
  await waitUntil(async () => (await results(db.sql))["LAW-DATABASE"]?.[0] === 5, "counted", 5000, 100);
  assert.ok(performance.now() - restored < 5000);
});
