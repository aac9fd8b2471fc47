import assert from "node:assert/strict";
import { ERROR_TYPES, REJECT_REASONS, rejectionErrorType } from "../lib/metric_labels.ts";
import { createMetrics } from "../lib/metrics.ts";
import { startService } from "../lib/service.ts";
import { createTestDatabase, createTestQueue } from "./support/servers.ts";
import { testConfig } from "./support/service.ts";
import { seedVote } from "./support/votes.ts";
import { waitForEvent } from "./support/wait.ts";
import { HAVE_PROMTOOL, promtool } from "./support/promtool.ts";

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

Deno.test("metrics: the README names every error_type and dead-letter reason", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  for (const value of [...ERROR_TYPES, ...REJECT_REASONS]) assert.ok(readme.includes(`\`${value}\``), value);
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
