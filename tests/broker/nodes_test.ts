/**
 * Several broker nodes: the order they are tried in, the backoff between full rounds only, and a
 * real connection that skips a node that refuses and lands on the one that answers, saying which.
 */

import assert from "node:assert/strict";
import { BrokerNodes } from "../../lib/broker/nodes.ts";
import { BrokerSession } from "../../lib/broker/session.ts";
import { createTestQueue, RABBITMQ_URL } from "../support/servers.ts";
import { freePort } from "../support/service.ts";

Deno.test("nodes: a random start, then round-robin; credentials, vhost and query kept per node", () => {
  const urls = ["amqp://u:p%40w@mq1:5672/v%2Fx?heartbeat=7", "amqps://mq2", "amqp://[::1]:5674"];
  const nodes = new BrokerNodes(urls, () => 0.5);
  assert.equal(nodes.current.address, "mq2:5671");
  assert.equal(nodes.current.protocol, "amqps");
  assert.equal(nodes.current.username, "guest");
  assert.equal(nodes.advance().address, "[::1]:5674");
  assert.equal(nodes.current.hostname, "::1");
  const first = nodes.advance();
  assert.deepEqual(
    [first.address, first.username, first.password, first.vhost, first.heartbeat],
    ["mq1:5672", "u", "p@w", "v%2Fx", 7],
  );
  const starts = new Set(Array.from({ length: 3 }, (_, i) => new BrokerNodes(urls, () => i / 3).current.address));
  assert.equal(starts.size, 3, "every node can be the first");
});

Deno.test("nodes: no wait between nodes, the backoff after each full round; one node backs off every time", () => {
  const round = (n: number) => 1000 * n;
  const three = new BrokerNodes(["amqp://a", "amqp://b", "amqp://c"]);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((a) => three.delay(a, round)), [0, 0, 1000, 0, 0, 2000]);
  const one = new BrokerNodes(["amqp://a"]);
  assert.deepEqual([1, 2, 3].map((a) => one.delay(a, round)), [1000, 2000, 3000]);
});

Deno.test({
  name: "nodes: a node that refuses is skipped at once; the session says which node it is on",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using queue = await createTestQueue();
    const closed = `amqp://guest:guest@127.0.0.1:${await freePort()}/`;
    const live = new URL(RABBITMQ_URL);
    const changes: [boolean, string][] = [];
    const broker = new BrokerSession({
      urls: [closed, closed, RABBITMQ_URL],
      queue: queue.name,
      prefetch: 10,
      queueType: "classic",
      deliveryLimit: 20,
      onDelivery: () => {},
      onSessionChange: (connected, node) => changes.push([connected, node]),
    });
    const started = performance.now();
    try {
      await broker.start();
      const seconds = (performance.now() - started) / 1000;
      assert.equal(broker.node, `${live.hostname}:${live.port || 5672}`);
      assert.deepEqual(changes, [[true, broker.node]]);
      // Two refusals inside the first round cost no backoff (a full round would wait ≥ 0.25 s).
      assert.ok(seconds < 2, `connected after ${seconds.toFixed(2)} s`);
    } finally {
      await broker.close();
    }
    assert.equal(broker.node, undefined);
  },
});
