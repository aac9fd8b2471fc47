/**
 * A quorum queue on a real 3-node RabbitMQ cluster (tests/support/cluster.ts), the service given every
 * node in RABBITMQ_URL, and a rolling restart of all three nodes (stop one, wait, start it, next) —
 * the node the service is connected to and the queue's leader among them:
 *
 * 1. during a drain of CLUSTER_VOTES (default 100,000) preloaded mixed votes (topped up, on a machine
 *    fast enough to drain them before the last node is back, with more while the restart goes on);
 * 2. during a stream of publishes, each chunk confirmed by a surviving node (republished on another
 *    node when its node went away: at-least-once, as a real publisher does).
 *
 * Both end exact (vote_results, one audit row per hash, duplicate_attempts, the DLQ), and counting
 * resumes within 10 s of each node stop: the stall per stop is printed (`cluster: stop … stall …`).
 * Skipped, saying why, where the cluster cannot be started (no rabbitmq-server, not root).
 */

import assert from "node:assert/strict";
import amqp, { type ConfirmChannel } from "amqplib";
import { type Cluster, type ClusterNode, clusterSkipReason, startCluster } from "../support/cluster.ts";
import { createTestDatabase, createTestQueue, type TestQueue, visibleVotes } from "../support/servers.ts";
import { call, serviceEnv, type ServiceProcess, spawnService } from "../support/service.ts";
import {
  addResults,
  assertDeadLetters,
  assertExactOutcome,
  buildMix,
  mergeContents,
  type Mix,
} from "../support/votes.ts";
import { Deadline, delay, withOutputOnFailure } from "../support/wait.ts";

const SKIP = clusterSkipReason();
if (SKIP) console.log(`cluster_test: skipped: ${SKIP}`);
const VOTES = Number(Deno.env.get("CLUSTER_VOTES") ?? 100_000);
/** Longest a node stop may stop the counting (the bound). */
const MAX_STALL_MS = 10_000;
/** How long a stopped node stays down before it is started again. */
const DOWN_MS = 1_000;
/** The drain is topped up with this many more votes when fewer wait and the rolling restart is not over. */
const TOP_UP_MARGIN = 10_000;

/** What one node stop did to the counting. */
interface StopRecord {
  node: string;
  roles: string[];
  /** From the stop command to the node's process gone. */
  stopMs: number;
  /** Longest time without a newly counted vote, from the stop command until the node was back. */
  stallMs: number;
}

/** Samples the counted votes every 50 ms; `stall(from, to)` is the longest gap without progress in that window. */
function progressSampler(db: { sql: Parameters<typeof visibleVotes>[0] }) {
  const samples: { at: number; votes: number }[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      samples.push({ at: performance.now(), votes: await visibleVotes(db.sql).catch(() => -1) });
      await delay(50);
    }
  })();
  return {
    get votes() {
      return samples.at(-1)?.votes ?? 0;
    },
    stall(from: number, to: number, total: number): number {
      let longest = 0;
      let lastProgress = from;
      let previous = samples.findLast((s) => s.at <= from)?.votes ?? 0;
      for (const sample of samples) {
        if (sample.at <= from) continue;
        if (sample.votes > previous || sample.votes >= total) {
          longest = Math.max(longest, sample.at - lastProgress);
          lastProgress = sample.at;
          previous = sample.votes;
          if (sample.votes >= total) return longest;
        }
        if (sample.at >= to) break;
      }
      return Math.max(longest, Math.min(to, samples.at(-1)?.at ?? to) - lastProgress);
    },
    async stop() {
      running = false;
      await loop;
    },
  };
}

/** Until every member of quorum queue `queue` is online again (a restarted node caught up). */
async function untilMembersOnline(cluster: Cluster, queue: string, deadline: Deadline): Promise<void> {
  await deadline.until(
    async () => {
      const node = cluster.nodes.find((n) => n.running)!;
      const rows = JSON.parse(
        await cluster.ctl(node, "list_queues", "-q", "--formatter", "json", "name", "online").catch(() => "[]"),
      ) as { name: string; online: string[] }[];
      return (rows.find((r) => r.name === queue)?.online.length ?? 0) === cluster.nodes.length;
    },
    `every member of ${queue} online`,
    { intervalMs: 250 },
  );
}

/**
 * Restarts every node once, one at a time: first the node the service is connected to, then the
 * queue's leader (when not restarted yet), then the rest. Returns what each stop did to the counting.
 */
async function rollingRestart(
  cluster: Cluster,
  service: ServiceProcess,
  queue: TestQueue,
  sampler: ReturnType<typeof progressSampler>,
  total: () => number,
  deadline: Deadline,
  onStopping: (node: ClusterNode) => void = () => {},
): Promise<StopRecord[]> {
  const records: StopRecord[] = [];
  const done = new Set<string>();
  while (done.size < cluster.nodes.length) {
    let brokerNode: string | null = null;
    await deadline.until(
      async () => (brokerNode = (await call(service, "/status")).body.broker_node) !== null,
      "connected",
    );
    const connected = cluster.byAddress(brokerNode!);
    const leader = await cluster.leaderOf(queue.name);
    const node = [connected, leader, ...cluster.nodes].find((n) => !done.has(n.name))!;
    const roles = [node === connected ? "connected" : "", node === leader ? "leader" : ""].filter(Boolean);
    if (sampler.votes >= total()) {
      throw new Error(`the drain ended before node ${node.name} was stopped: raise CLUSTER_VOTES`);
    }
    onStopping(node);
    const t0 = performance.now();
    await cluster.stop(node);
    const stopped = performance.now();
    deadline.step(`stopped ${node.name} (${roles.join(", ") || "follower"}) in ${Math.round(stopped - t0)} ms`);
    await delay(DOWN_MS);
    await cluster.start(node);
    const back = performance.now();
    deadline.step(`started ${node.name} in ${Math.round(back - stopped - DOWN_MS)} ms`);
    records.push({
      node: node.name,
      roles,
      stopMs: Math.round(stopped - t0),
      stallMs: Math.round(sampler.stall(t0, back, total())),
    });
    done.add(node.name);
    await untilMembersOnline(cluster, queue.name, deadline);
  }
  return records;
}

function report(label: string, records: StopRecord[]): void {
  for (const r of records) {
    console.log(
      `cluster: ${label}: stop ${r.node} (${r.roles.join(", ") || "follower"}): node down after ${r.stopMs} ms, ` +
        `counting stalled at most ${r.stallMs} ms`,
    );
  }
  for (const r of records) {
    assert.ok(r.stallMs <= MAX_STALL_MS, `${label}: counting stalled ${r.stallMs} ms after stopping ${r.node}`);
  }
  const roles = records.flatMap((r) => r.roles);
  assert.ok(roles.includes("connected") && roles.includes("leader"), `restarted: ${JSON.stringify(records)}`);
}

/** Waits for every valid vote counted and the queue empty, stops the service, checks the outcome exactly. */
async function assertDrained(
  mix: Mix,
  db: Awaited<ReturnType<typeof createTestDatabase>>,
  queue: TestQueue,
  service: ServiceProcess,
  deadline: Deadline,
): Promise<void> {
  let counted = 0;
  await deadline.until(
    async () => (counted = await visibleVotes(db.sql)) >= mix.sent.valid,
    "every valid vote counted",
    {
      intervalMs: 200,
      describe: () => `${counted} of ${mix.sent.valid}`,
    },
  );
  await deadline.until(async () => (await queue.count()) === 0, "the vote queue empty", { intervalMs: 200 });
  assert.equal(await service.stopWithin(30_000), 0, "graceful stop");
  await assertExactOutcome(db.sql, mix.expected, mix.contents);
  const copies = assertDeadLetters(await queue.takeDeadLetters(), mix.malformed);
  console.log(`cluster: ${mix.malformed.size} malformed dead-lettered (${copies} twice, after a lost connection)`);
}

/** Two mixes published to one queue, as one: what the database and the DLQ must hold once both are consumed. */
function combine(a: Mix, b: Mix): Mix {
  return {
    bodies: [...a.bodies, ...b.bodies],
    expected: addResults(a.expected, b.expected),
    contents: mergeContents(a, b),
    malformed: new Map([...a.malformed, ...b.malformed]),
    sent: {
      valid: a.sent.valid + b.sent.valid,
      duplicates: a.sent.duplicates + b.sent.duplicates,
      copies: a.sent.copies + b.sent.copies,
      malformed: a.sent.malformed + b.sent.malformed,
    },
  };
}

function mixOf(total: number, seed: number, voterBase = 0): Mix {
  const malformed = Math.round(total * 0.01);
  const duplicates = Math.round(total * 0.05);
  const copies = Math.round(total * 0.01);
  return buildMix({ valid: total - malformed - duplicates - copies, duplicates, copies, malformed, seed, voterBase });
}

/** Publishes `bodies` in confirmed chunks to a running node other than `avoid()`; a chunk whose node went away is published again elsewhere. */
async function publishThroughRestarts(
  cluster: Cluster,
  queue: string,
  bodies: string[],
  perSecond: number,
  avoid: () => ClusterNode | undefined,
): Promise<{ republished: number }> {
  const chunk = 100;
  let republished = 0;
  let channel: ConfirmChannel | undefined;
  let close = async () => {};
  const start = performance.now();
  for (let i = 0; i < bodies.length;) {
    try {
      if (channel === undefined) {
        const node = cluster.nodes.find((n) => n.running && n !== avoid()) ?? cluster.nodes.find((n) => n.running)!;
        const model = await amqp.connect(node.url);
        model.on("error", () => {});
        channel = await model.createConfirmChannel();
        channel.on("error", () => {});
        close = () => model.close().catch(() => {});
      }
      for (const body of bodies.slice(i, i + chunk)) {
        channel.sendToQueue(queue, Buffer.from(body), { persistent: true, contentType: "application/json" });
      }
      await channel.waitForConfirms();
      i += chunk;
      const ahead = (i / perSecond) * 1000 - (performance.now() - start);
      if (ahead > 0) await delay(ahead);
    } catch {
      // Not confirmed: may or may not be in the queue. Publish the chunk again on a surviving node.
      republished += chunk;
      await close();
      channel = undefined;
      await delay(100);
    }
  }
  await close();
  return { republished };
}

/** Runs `fn`, printing its error first: a failing dispose after it would hide it in a SuppressedError. */
async function logged(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (error) {
    // A SuppressedError holds the test's error in `suppressed` and the dispose's in `error`.
    const { error: disposing, suppressed } = error as { error?: Error; suppressed?: Error };
    console.error(`cluster: ${suppressed?.stack ?? (error as Error).stack}`);
    if (disposing) console.error(`cluster: then, at dispose: ${disposing.stack}`);
    throw error;
  }
}

Deno.test({
  name: "cluster: a quorum queue on 3 nodes; rolling restarts during a drain and during a stream of publishes",
  ignore: SKIP !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using cluster = await startCluster(3);
    const env = (db: { url: string }, queue: TestQueue) =>
      serviceEnv(db, queue, {
        RABBITMQ_URL: cluster.urls.join(","),
        RABBITMQ_QUEUE_TYPE: "quorum",
        BATCH_SIZE: Deno.env.get("CLUSTER_BATCH_SIZE") ?? "50",
        RABBITMQ_PREFETCH_COUNT: String(2 * Number(Deno.env.get("CLUSTER_BATCH_SIZE") ?? "50")),
        MAX_INFLIGHT_BATCHES: "1",
      });

    await t.step(`rolling restart during a drain of ${VOTES} mixed votes`, () =>
      logged(async () => {
        await using db = await createTestDatabase();
        await using queue = await createTestQueue({ url: cluster.urls[0], quorum: true, prefix: "votes_cluster" });
        const mix = mixOf(VOTES, 19);
        let drained = mix;
        const published = performance.now();
        await queue.publish(mix.bodies);
        console.log(`cluster: preloaded ${mix.bodies.length} in ${Math.round(performance.now() - published)} ms`);
        await using service = await spawnService(env(db, queue));
        const deadline = new Deadline("cluster drain", 600_000);
        await withOutputOnFailure(deadline, () => [service], async () => {
          const sampler = progressSampler(db);
          try {
            await deadline.until(() => sampler.votes > 0, "counting started", { intervalMs: 50 });
            // On a fast machine the backlog could drain before the last node is back: then more mixed votes are
            // published (through a surviving node) whenever fewer than TOP_UP_MARGIN wait, so that counting goes
            // on through every stop.
            let stopping: ClusterNode | undefined;
            let done = false;
            const topUp = (async () => {
              for (let chunk = 1; !done; chunk++) {
                while (!done && sampler.votes < drained.sent.valid - TOP_UP_MARGIN) await delay(100);
                if (done) return;
                const more = mixOf(TOP_UP_MARGIN, 29 + chunk, 20_000_000 + chunk * TOP_UP_MARGIN);
                drained = combine(drained, more);
                const { republished } = await publishThroughRestarts(cluster, queue.name, more.bodies, 1e9, () =>
                  stopping);
                console.log(`cluster: drain: topped up with ${more.bodies.length} votes (${republished} republished)`);
              }
            })();
            try {
              const records = await rollingRestart(
                cluster,
                service,
                queue,
                sampler,
                () =>
                  drained.sent.valid,
                deadline,
                (node) => {
                  stopping = node;
                },
              );
              console.log(
                `cluster: drain: ${sampler.votes} of ${drained.sent.valid} counted when the last node was back`,
              );
              report("drain", records);
            } finally {
              done = true;
              await topUp;
            }
          } finally {
            await sampler.stop();
          }
          await assertDrained(drained, db, queue, service, deadline);
        });
      }));

    await t.step("rolling restart during a stream of publishes confirmed by a surviving node", async () => {
      await using db = await createTestDatabase();
      await using queue = await createTestQueue({ url: cluster.urls[1], quorum: true, prefix: "votes_cluster" });
      await using service = await spawnService(env(db, queue));
      const mix = mixOf(Number(Deno.env.get("CLUSTER_STREAM_VOTES") ?? 40_000), 23, 10_000_000);
      const deadline = new Deadline("cluster stream", 600_000);
      await withOutputOnFailure(deadline, () => [service], async () => {
        const sampler = progressSampler(db);
        let stopping: ClusterNode | undefined;
        const publishing = publishThroughRestarts(cluster, queue.name, mix.bodies, 600, () => stopping);
        try {
          await deadline.until(() => sampler.votes > 0, "counting started", { intervalMs: 50 });
          const records = await rollingRestart(
            cluster,
            service,
            queue,
            sampler,
            () => mix.sent.valid,
            deadline,
            (node) => {
              stopping = node;
            },
          );
          report("stream", records);
        } finally {
          const { republished } = await publishing;
          console.log(
            `cluster: stream: ${mix.bodies.length} published, ${republished} of them again after a lost node`,
          );
          await sampler.stop();
        }
        await assertDrained(mix, db, queue, service, deadline);
      });
    });
  },
});
