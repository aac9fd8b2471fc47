/**
 * The service as a daemon, run as a real process with the database and the broker behind the tests' TCP
 * proxies: one stop request is one drain however many processes of its group receive it, start-up waits for
 * servers that are not up yet, readiness follows the servers within seconds while idle, counting resumes within
 * seconds of the network's return, and `POST /pause` answers at once in every state.
 *
 * @module
 */

import assert from "node:assert/strict";
import { TcpProxy, viaPort } from "./support/proxy.ts";
import {
  createTestDatabase,
  createTestQueue,
  POSTGRES_URL,
  RABBITMQ_URL,
  results,
  type TestDatabase,
  type TestQueue,
} from "./support/servers.ts";
import {
  admin,
  ADMIN_TOKEN,
  call,
  serviceEnv,
  type ServiceProcess,
  type SpawnOptions,
  spawnService,
} from "./support/service.ts";
import { seedVote } from "./support/votes.ts";
import { delay, waitUntil } from "./support/wait.ts";

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
 * Starts a service on a database and a queue of its own, both through proxies; `before` runs once the proxies
 * exist and before the service starts (to cut one).
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
    const service = stack.use(await spawnService(env, options));
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
  await waitUntil(async () => (await service.status()).consuming, "consuming");
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
  const status = await service.status();
  assert.deepEqual([status.state, status.consuming], ["paused", false], "the operator's pause holds");
  await queue.publish(votesFor("LAW-PAUSE", 3, 100));
  assert.equal((await admin(service, "/resume")).status, 200);
  await waitUntil(async () => (await results(db.sql))["LAW-PAUSE"]?.[0] === 8, "counting resumes");
});
