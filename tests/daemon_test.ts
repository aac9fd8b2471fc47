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
import { createTestDatabase, createTestQueue, POSTGRES_URL, results } from "./support/servers.ts";
import { serviceEnv, spawnService } from "./support/service.ts";
import { seedVote } from "./support/votes.ts";
import { delay, waitUntil } from "./support/wait.ts";

/** Signals this close to the first are copies of it (main.ts). */
const REPEAT_SIGNAL_MS = 1000;

const QUEUE_PREFIX = "daemon_votes";
const postgresPort = Number(new URL(POSTGRES_URL).port || 5432);

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`daemon: ${signal} to deno task start's whole process group mid-drain is one drain, exit 0`, async () => {
    await using db = await createTestDatabase();
    await using queue = await createTestQueue({ prefix: QUEUE_PREFIX });
    // A slow database: the drain's commit is still under way when the group's copies of the signal arrive.
    await using database = new TcpProxy(postgresPort);
    await using service = await spawnService(serviceEnv({ url: viaPort(db.url, database.port) }, queue), {
      viaStartTask: true,
      ownProcessGroup: true,
    });
    database.setLatency(250);
    const votes = Array.from({ length: 20 }, (_, i) => seedVote(i, "LAW-GROUP", i % 4 ? "oui" : "non"));
    await queue.publish(votes);
    await waitUntil(async () => {
      const { ready, unacked } = await queue.info();
      return ready === 0 && unacked === votes.length;
    }, "every vote delivered, none acknowledged yet: a commit under way");

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
  await using db = await createTestDatabase();
  await using queue = await createTestQueue({ prefix: QUEUE_PREFIX });
  await using database = new TcpProxy(postgresPort);
  await using service = await spawnService(serviceEnv({ url: viaPort(db.url, database.port) }, queue), {
    viaStartTask: true,
    ownProcessGroup: true,
  });
  await database.cut();
  const votes = Array.from({ length: 10 }, (_, i) => seedVote(i, "LAW-TWICE", "oui"));
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
