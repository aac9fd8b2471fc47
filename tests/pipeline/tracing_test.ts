import assert from "node:assert/strict";
import { loadConfig } from "../../lib/config/config.ts";
import { BATCH_SPAN } from "../../lib/pipeline/tracing.ts";
import { permissionFlags } from "../../tools/permissions.ts";
import { createTestDatabase, createTestQueue, lockLaw, results } from "../support/servers.ts";
import { freePort, serviceEnv, spawnService } from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { waitUntil } from "../support/wait.ts";

/** A span as OTLP/JSON carries it, attributes flattened. */
interface ReceivedSpan {
  name: string;
  attributes: Record<string, string | number | boolean>;
  status?: { code?: number };
}

type OtlpValue = { stringValue?: string; intValue?: string | number; boolValue?: boolean; doubleValue?: number };

function flatten(attributes: { key: string; value: OtlpValue }[] = []): ReceivedSpan["attributes"] {
  const flat: ReceivedSpan["attributes"] = {};
  for (const { key, value } of attributes) {
    flat[key] = value.intValue !== undefined
      ? Number(value.intValue)
      : value.stringValue ?? value.boolValue ?? value.doubleValue ?? JSON.stringify(value);
  }
  return flat;
}

/** The smallest OTLP/HTTP collector: takes POST /v1/traces (JSON) and keeps the spans; answers every other signal. */
function otlpReceiver() {
  const spans: ReceivedSpan[] = [];
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const body = await request.text();
    requests.push(`${request.method} ${new URL(request.url).pathname}`);
    if (request.method === "POST" && new URL(request.url).pathname === "/v1/traces") {
      assert.match(
        request.headers.get("content-type") ?? "",
        /json/,
        "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is honoured",
      );
      const payload = JSON.parse(body);
      for (const resource of payload.resourceSpans ?? []) {
        for (const scope of resource.scopeSpans ?? []) {
          for (const span of scope.spans ?? []) {
            spans.push({ name: span.name, attributes: flatten(span.attributes), status: span.status });
          }
        }
      }
    }
    return new Response("{}", { headers: { "content-type": "application/json" } });
  });
  return { spans, requests, url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

Deno.test("tracing: with OTEL_DENO=true, under the service's own permission set, each batch is a span with its attributes; HTTP requests too", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const receiver = otlpReceiver();
  try {
    const env = serviceEnv(db, queue, {
      HTTP_HOST: "127.0.0.1",
      PROMETHEUS_PORT: String(freePort()),
      // One batch of exactly these 7 messages.
      BATCH_SIZE: "7",
      BATCH_TIMEOUT_SECONDS: "30",
      MAX_INFLIGHT_BATCHES: "1", // while the held commit runs, no slot is free: the 7 gather until BATCH_SIZE
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_SERVICE_NAME: "vote-aggregator-test",
    });
    // The generated set: the collector's host is not in it, nor are the OTEL_* variables (Deno's exporter needs neither).
    const flags = permissionFlags(loadConfig(env));
    assert.ok(!flags.some((f) => f.includes(new URL(receiver.url).host)));
    const service = await spawnService(env, { permissions: flags });
    // A commit held on a row lock, so that the 7 messages gather into one batch behind it (group commit would
    // otherwise close a batch at the first pause between deliveries).
    const held = await lockLaw(db.sql, "TR-HOLD");
    await queue.publish([seedVote(9, "TR-HOLD", "oui")]);
    await waitUntil(async () => (await service.status()).inflight_batches === 1, "a commit is held");
    await queue.publish([
      seedVote(1, "TR-A", "oui"),
      seedVote(2, "TR-A", "non"),
      seedVote(3, "TR-B", "oui"),
      seedVote(4, "TR-B", "oui"),
      seedVote(5, "TR-B", "non"),
      seedVote(5, "TR-B", "oui"), // the same hash with other content: a duplicate attempt
      "not json",
    ]);
    await waitUntil(async () => (await service.status()).inflight_batches === 2, "the 7 messages' batch closed");
    await held[Symbol.asyncDispose]();
    await waitUntil(async () => (await service.status()).totals.batches === 2, "both batches are committed");
    assert.deepEqual(await results(db.sql), { "TR-A": [1, 1], "TR-B": [2, 1], "TR-HOLD": [1, 0] });
    // The exporter flushes at exit; the graceful stop must not lose the spans.
    assert.equal(await service.stopWithin(20_000), 0, service.output());

    await waitUntil(() => receiver.spans.some((s) => s.name === BATCH_SPAN), "the batch span arrives", 10_000);
    const batches = receiver.spans.filter((s) => s.name === BATCH_SPAN);
    assert.equal(batches.length, 2, "one span per batch");
    const { attributes, status } = batches.find((s) => s.attributes["batch.messages"] === 7) ?? batches[0];
    assert.deepEqual(
      {
        messages: attributes["batch.messages"],
        votes: attributes["batch.votes"],
        laws: attributes["batch.laws"],
        counted: attributes["batch.counted"],
        duplicates: attributes["batch.duplicates"],
        redelivered: attributes["batch.redelivered"],
        deadLettered: attributes["batch.dead_lettered"],
        attempts: attributes["batch.commit_attempts"],
        transactions: attributes["batch.transactions"],
        acknowledged: attributes["batch.acknowledged"],
      },
      {
        messages: 7,
        votes: 6,
        laws: 2,
        counted: 5,
        duplicates: 1,
        redelivered: 0,
        deadLettered: 1,
        attempts: 1,
        transactions: 1,
        acknowledged: true,
      },
    );
    assert.notEqual(status?.code, 2, "not an error span");
    const http = receiver.spans.filter((s) => s.attributes["url.path"] === "/status");
    assert.ok(http.length > 0, `a span for GET /status: ${JSON.stringify(receiver.spans.map((s) => s.name))}`);
    assert.deepEqual(
      [
        http[0].name,
        http[0].attributes["http.request.method"],
        String(http[0].attributes["http.response.status_code"]),
      ],
      ["GET", "GET", "200"],
    );
  } finally {
    await receiver.close();
  }
});

Deno.test("tracing: off by default, nothing is sent", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const receiver = otlpReceiver();
  let requests: string[] = [];
  try {
    const env = serviceEnv(db, queue, {
      BATCH_SIZE: "1",
      // Where traces would go, if OTEL_DENO were set.
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    });
    const service = await spawnService(env);
    await queue.publish([seedVote(1, "TR-OFF", "oui")]);
    await waitUntil(async () => (await service.status()).totals.counted === 1, "the vote is counted");
    assert.equal(await service.stopWithin(20_000), 0, service.output());
    requests = receiver.requests;
  } finally {
    await receiver.close();
  }
  assert.deepEqual(requests, [], "nothing is exported (traces, logs or metrics) without OTEL_DENO=true");
});
