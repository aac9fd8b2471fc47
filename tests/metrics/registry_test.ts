import assert from "node:assert/strict";
import client from "prom-client";
import {
  ERROR_TYPES,
  REJECT_REASONS,
  rejectionErrorType,
  RESULTS_ROUTES,
  STREAM_EVENT_TYPES,
} from "../../lib/metrics/labels.ts";
import { LISTENER_APPLICATION_NAME } from "../../lib/results/listener.ts";
import { createMetrics } from "../../lib/metrics/registry.ts";
import { resultsMetrics, type ResultsStats } from "../../lib/results/metrics.ts";
import { startService } from "../../lib/service.ts";
import { createTestDatabase, createTestQueue } from "../support/servers.ts";
import { openStream } from "../support/sse.ts";
import { testConfig } from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { waitForEvent, waitUntil } from "../support/wait.ts";
import { HAVE_PROMTOOL, promtool } from "../support/promtool.ts";

/** Sample lines of a text exposition, as a map from series (name and labels) to value. */
function samples(text: string): Map<string, number> {
  const map = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    map.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return map;
}

Deno.test("metrics: a rejected message's error_type is the seed's json_decode for bad JSON", () => {
  assert.equal(rejectionErrorType("invalid_json"), "json_decode");
  assert.equal(rejectionErrorType("unknown_choice"), "invalid_message");
  assert.equal(rejectionErrorType("oversized"), "invalid_message");
  assert.equal(rejectionErrorType("database_rejected"), "database_rejected");
  for (const reason of REJECT_REASONS) {
    assert.ok((ERROR_TYPES as readonly string[]).includes(rejectionErrorType(reason)), reason);
  }
});

Deno.test("metrics: every labelled counter's values exist at 0 from the start", async () => {
  const exposed = samples(await createMetrics(false).registry.metrics());
  for (const type of ERROR_TYPES) assert.equal(exposed.get(`aggregation_errors_total{error_type="${type}"}`), 0, type);
  for (const reason of REJECT_REASONS) assert.equal(exposed.get(`dead_lettered_total{reason="${reason}"}`), 0, reason);
  assert.equal(REJECT_REASONS.length, 7, "every RejectReason, no more");
});

Deno.test("metrics: docs/ names every error_type and dead-letter reason", async () => {
  const read = (page: string) => Deno.readTextFile(new URL(`../../docs/${page}`, import.meta.url));
  const page = (await read("operations.md")) + (await read("architecture.md"));
  for (const value of [...ERROR_TYPES, ...REJECT_REASONS]) assert.ok(page.includes(`\`${value}\``), value);
});

Deno.test({
  name: "metrics: a fresh registry passes promtool check metrics",
  ignore: !HAVE_PROMTOOL,
  fn: async () => {
    const { code, output } = await promtool(["check", "metrics"], await createMetrics().registry.metrics());
    assert.equal(code, 0, output);
  },
});

Deno.test({
  name: "metrics: a running service's /metrics passes promtool check metrics, every line",
  ignore: !HAVE_PROMTOOL,
  fn: async () => {
    await using db = await createTestDatabase();
    await using queue = await createTestQueue();
    const service = await startService(testConfig(db, queue, {}));
    try {
      // A vote, a duplicate attempt and a malformed message: the labelled series take real values too.
      await queue.publish([seedVote(1, "L1", "oui"), seedVote(1, "L1", "non"), "{"]);
      await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === 3);
      const response = await fetch(`http://127.0.0.1:${service.http.port}/metrics`);
      const text = await response.text();
      assert.equal(response.status, 200);
      const exposed = samples(text);
      assert.equal(exposed.get('dead_lettered_total{reason="invalid_json"}'), 1);
      assert.equal(exposed.get('dead_lettered_total{reason="unknown_choice"}'), 0);
      assert.ok(exposed.has("nodejs_heap_size_used_bytes"), "the default metrics are there");
      const { code, output } = await promtool(["check", "metrics"], text);
      assert.equal(code, 0, `promtool check metrics:\n${output}`);
    } finally {
      await service.stop();
    }
  },
});

Deno.test("metrics: the results_* series are read from the live results' counts at each scrape", async () => {
  const registry = new client.Registry();
  const stats: ResultsStats = {
    clients: 3,
    events: { snapshot: 3, totals: 12, heartbeat: 0 },
    listenerReconnects: 1,
    requests: { page: 2, results: 5, law: 0, stream: 3 },
  };
  let started = false;
  resultsMetrics([registry], () => started ? stats : undefined);
  const scrape = async () => samples(await registry.metrics());
  let exposed = await scrape();
  assert.equal(exposed.get("results_stream_clients"), 0, "no live results yet");
  for (const type of STREAM_EVENT_TYPES) assert.equal(exposed.get(`results_stream_events_total{type="${type}"}`), 0);
  assert.equal(exposed.get("results_listener_reconnects_total"), 0);
  for (const route of RESULTS_ROUTES) assert.equal(exposed.get(`results_requests_total{route="${route}"}`), 0);

  started = true;
  exposed = await scrape();
  assert.equal(exposed.get("results_stream_clients"), 3);
  assert.equal(exposed.get('results_stream_events_total{type="totals"}'), 12);
  assert.equal(exposed.get('results_stream_events_total{type="snapshot"}'), 3);
  assert.equal(exposed.get("results_listener_reconnects_total"), 1);
  assert.equal(exposed.get('results_requests_total{route="results"}'), 5);
  assert.equal(exposed.get('results_requests_total{route="law"}'), 0);
  stats.clients = 1;
  stats.events.totals = 20;
  stats.requests.results = 9;
  exposed = await scrape();
  assert.equal(exposed.get("results_stream_clients"), 1);
  assert.equal(exposed.get('results_stream_events_total{type="totals"}'), 20, "not counted twice");
  assert.equal(exposed.get('results_requests_total{route="results"}'), 9);
  assert.equal(exposed.get("results_listener_reconnects_total"), 1);
});

Deno.test({
  name: "metrics: a stream client, its events and a listener reconnect move the results_* series of a running service",
  fn: async () => {
    await using db = await createTestDatabase();
    await using queue = await createTestQueue();
    const service = await startService(testConfig(db, queue, { RESULTS_EVENT_INTERVAL_MS: "0" }));
    const scrape = async () => samples(await (await fetch(`http://127.0.0.1:${service.http.port}/metrics`)).text());
    try {
      assert.equal((await scrape()).get("results_stream_clients"), 0);
      {
        await using stream = await openStream(`http://127.0.0.1:${service.http.port}/results/stream`);
        await waitForEvent(stream.changed, "event", () => stream.events.length === 1);
        await queue.publish([seedVote(1, "L1", "oui"), seedVote(2, "L1", "non")]);
        await waitForEvent(stream.changed, "event", () => stream.totals().L1?.[0] + stream.totals().L1?.[1] === 2);
        const exposed = await scrape();
        assert.equal(exposed.get("results_stream_clients"), 1);
        assert.equal(exposed.get('results_stream_events_total{type="snapshot"}'), 1);
        const totals = stream.events.filter((e) => e.event === "totals").length;
        assert.equal(exposed.get('results_stream_events_total{type="totals"}'), totals);
        assert.equal(exposed.get("results_listener_reconnects_total"), 0);
      }
      await waitUntil(async () => (await scrape()).get("results_stream_clients") === 0, "the stream closed");

      // This test's database only: its service's listening connection.
      const [{ terminated }] = await db.sql<{ terminated: boolean }[]>`
        select bool_and(pg_terminate_backend(pid)) as terminated from pg_stat_activity
        where datname = ${db.name} and application_name = ${LISTENER_APPLICATION_NAME}`;
      assert.ok(terminated);
      await waitUntil(async () => (await scrape()).get("results_listener_reconnects_total") === 1, "a reconnect");
    } finally {
      await service.stop();
    }
  },
});
