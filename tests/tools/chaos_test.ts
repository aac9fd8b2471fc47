/**
 * The chaos soak's parts (tools/chaos/): the schedule is the seed's alone and
 * keeps its overlap rules, the proxy's latency and upstream ports, each
 * fault's do/undo on a real instance, and the end checks — that they pass on
 * an exact outcome and fail on a tampered one. The soak itself runs for 60 s
 * in .ci/run (`deno task chaos --seconds 60 --seed 17`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { startService } from "../../lib/service.ts";
import { generateVotes } from "../../tools/publish.ts";
import { checkCounts, checkDeadLetters, checkExits, checkQueue, expectedOf } from "../../tools/chaos/checks.ts";
import { actionFor, type FaultContext } from "../../tools/chaos/faults.ts";
import { Instances } from "../../tools/chaos/instances.ts";
import { SoakPublisher } from "../../tools/chaos/publisher.ts";
import { busyUntil, FAULT_KINDS, overlapping, type PlannedFault, planSchedule } from "../../tools/chaos/scheduler.ts";
import { quantile } from "../../tools/chaos/report.ts";
import { soakPlan } from "../../tools/chaos/soak.ts";
import { TcpProxy } from "../support/proxy.ts";
import { createTestDatabase, createTestQueue, untilQueueSettled } from "../support/servers.ts";
import { metric, testConfig } from "../support/service.ts";
import { Deadline, waitUntil } from "../support/wait.ts";

Deno.test("planSchedule: the seed's alone, overlapping, and within its rules", () => {
  const options = { seed: 17, startMs: 2000, endMs: 595_000, instances: 3 };
  assert.deepEqual(planSchedule(options), planSchedule(options), "same seed, same schedule");
  assert.notDeepEqual(planSchedule(options), planSchedule({ ...options, seed: 18 }), "another seed, another one");
  for (let seed = 1; seed <= 40; seed++) {
    const plan = planSchedule({ ...options, seed });
    assert.ok(plan.length >= 60, `seed ${seed}: a fault every ~6 s (${plan.length})`);
    assert.ok(overlapping(plan) >= 30, `seed ${seed}: at least 30 faults overlap another (${overlapping(plan)})`);
    assert.ok(plan.every((f) => !f.kind.startsWith("restart_")), "no machine-wide fault unless asked");
    for (const f of plan) {
      assert.ok(f.atMs >= 2000 && f.atMs + f.holdMs <= 595_000, `#${f.id} is done and undone within the run`);
      const during = plan.filter((g) => g !== f && g.atMs < busyUntil(f) && f.atMs < busyUntil(g));
      if (f.kind === "kill" || f.kind === "sigterm") {
        assert.ok(
          during.every((g) => g.instance !== f.instance),
          `seed ${seed}: nothing else on instance ${f.instance} while #${f.id} ${f.kind} stops it`,
        );
      }
    }
  }
  const withRestarts = planSchedule({ ...options, restarts: true });
  const restarts = withRestarts.filter((f) => f.kind.startsWith("restart_"));
  assert.ok(restarts.length > 0, "FAULT_RESTARTS plans server restarts");
  for (const r of restarts) {
    const clash = withRestarts.find((g) =>
      g !== r &&
      ["restart_postgres", "restart_broker", "kill", "sigterm", "close_broker", "kill_backends"].includes(g.kind) &&
      g.atMs < busyUntil(r) &&
      r.atMs < busyUntil(g)
    );
    assert.equal(clash, undefined, `#${r.id} ${r.kind} overlaps no restart, process fault or server query`);
  }
});

Deno.test("planSchedule: .ci/run's 60 s soak (seed 2663) schedules every kind of fault", () => {
  const ci = { seconds: 60, instances: 3, seed: 2663 };
  assert.deepEqual(new Set(soakPlan(ci, true).map((f) => f.kind)), new Set(FAULT_KINDS));
  assert.deepEqual(
    new Set(soakPlan(ci, false).map((f) => f.kind)),
    new Set(FAULT_KINDS.filter((k) => !k.startsWith("restart_"))),
  );
});

Deno.test("report: p99 is the nearest rank", () => {
  assert.equal(quantile([5, 1, 3], 0.5), 3);
  assert.equal(quantile(Array.from({ length: 200 }, (_, i) => i + 1), 0.99), 198);
  assert.ok(Number.isNaN(quantile([], 0.99)));
});

Deno.test("TcpProxy: added latency slows each round trip; upstreamPorts are what the target sees", async () => {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const peers: number[] = [];
  const serving = (async () => {
    for await (const conn of server) {
      peers.push((conn.remoteAddr as Deno.NetAddr).port);
      conn.readable.pipeTo(conn.writable).catch(() => {}); // echo
    }
  })();
  await using proxy = new TcpProxy((server.addr as Deno.NetAddr).port);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const roundTrip = async () => {
    const start = performance.now();
    await conn.write(new Uint8Array([1]));
    await conn.read(new Uint8Array(1));
    return performance.now() - start;
  };
  await roundTrip();
  assert.deepEqual(proxy.upstreamPorts, peers, "the proxy's upstream port is the target's peer port");
  proxy.setLatency(100);
  assert.ok(await roundTrip() >= 195, "100 ms each way");
  proxy.setLatency(0);
  assert.ok(await roundTrip() < 100, "latency removed");
  assert.throws(() => proxy.setLatency(-1), /must be 0 or more/);
  conn.close();
  server.close();
  await serving.catch(() => {});
});

Deno.test("chaos faults on a real instance: close_broker, kill_backends, slow_db, pause, SIGTERM exit 0, kill", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue({ prefix: "h17chaos" });
  const problems: string[] = [];
  await using instances = new Instances(1, db, queue, (m) => problems.push(m));
  await instances.start();
  const slot = instances.slots[0];
  const context: FaultContext = { instances, dbName: db.name, problem: (m) => problems.push(m), sigtermExits: [] };
  const fault = (kind: PlannedFault["kind"], extra: Partial<PlannedFault> = {}) =>
    actionFor({ id: 1, kind, atMs: 0, holdMs: 0, instance: 0, ...extra }, context);

  await waitUntil(() => slot.broker.upstreamPorts.length > 0, "the instance holds a broker connection");
  assert.equal(await fault("close_broker").do(), "closed 1 connection(s)", "its own connection, and only it");
  await waitUntil(async () => await metric(slot.service!, "broker_reconnects_total") >= 1, "it reconnects", 30_000);

  assert.match(String(await fault("kill_backends").do()), /terminated [1-9]\d* backend/, "its pool's backends");

  const slow = fault("slow_db", { latencyMs: 40 });
  await slow.do();
  assert.equal(slot.db.latencyMs, 40);
  await slow.undo();
  assert.equal(slot.db.latencyMs, 0);

  const pause = fault("pause");
  assert.match(String(await pause.do()), /^200 .*"paused"/);
  await pause.undo();
  assert.equal((await slot.service!.status()).state, "running");

  // A few votes, so SIGTERM finds work; then the restart counts again.
  const publisher = new SoakPublisher({ queue: queue.name, seed: 3, rate: 2000, maxSeconds: 0.2 });
  publisher.start();
  const sigterm = fault("sigterm");
  assert.match(String(await sigterm.do()), /^exit 0/);
  assert.deepEqual(context.sigtermExits, [0]);
  await sigterm.undo();
  const kill = fault("kill");
  assert.equal(await kill.do(), "exit 137");
  await kill.undo();
  await publisher.stop();
  await untilQueueSettled(new Deadline("chaos faults", 60_000), queue.name);
  assert.equal((await checkCounts(db, expectedOf(publisher.votes, publisher.confirmed))).ok, true);
  assert.deepEqual(await instances.stopAll(), [0]);
  assert.deepEqual(problems, []);
});

Deno.test("chaos checks: pass on an exact outcome, fail on a vote counted twice, a lost dead letter, a bad exit", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue({ prefix: "h17chaos" });
  const service = await startService(testConfig(db, queue));
  const publisher = new SoakPublisher({ queue: queue.name, seed: 9, rate: 3000, maxSeconds: 0.4 });
  publisher.start();
  await waitUntil(() => publisher.confirmed === publisher.votes.count, "all 1200 published", 30_000);
  await publisher.stop();
  await untilQueueSettled(new Deadline("chaos checks", 60_000), queue.name);
  await service.stop();

  const expected = expectedOf(publisher.votes, publisher.confirmed);
  assert.ok(expected.valid > 1000 && expected.duplicates > 0 && expected.malformed.size > 0);
  assert.deepEqual(
    Object.fromEntries(Object.entries(expected.totals).map(([law, [oui, non]]) => [law, { oui, non }])),
    publisher.votes.expected,
    "the checks' reading of the messages agrees with the generator's totals",
  );
  const counts = await checkCounts(db, expected);
  assert.ok(counts.ok, counts.detail);
  const letters = await queue.takeDeadLetters();
  assert.ok(checkDeadLetters(letters, expected).ok);
  assert.ok((await checkQueue(queue)).ok);

  assert.equal(checkDeadLetters(letters.slice(1), expected).ok, false, "a malformed message missing from the DLQ");
  await db.sql`update vote_results set oui_count = oui_count + 1 where law_id = 'LAW-001'`;
  assert.equal((await checkCounts(db, expected)).ok, false, "a vote counted twice");
  await db.sql`update vote_results set oui_count = oui_count - 1 where law_id = 'LAW-001'`;
  await db.sql`delete from duplicate_attempts where ctid = (select min(ctid) from duplicate_attempts)`;
  assert.equal((await checkCounts(db, expected)).ok, false, "a duplicate attempt not recorded");
  assert.equal(checkExits([0, 1], [0, 0, 0]).ok, false, "a SIGTERM that did not exit 0");
  assert.equal(checkExits([0], [0, "did not stop"]).ok, false);
  const noise = generateVotes({ count: 1, seed: 1 });
  assert.equal(expectedOf(noise, 0).valid, 0, "nothing confirmed, nothing expected");
});
