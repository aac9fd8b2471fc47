import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { HEADERS_DROPPED_HEADER, MAX_COPIED_HEADER_BYTES } from "../../lib/broker/copied_headers.ts";
import { originalDigest, REJECT_REASON_HEADER } from "../../lib/broker/dead_letter.ts";
import { startService } from "../../lib/service.ts";
import { createTestDatabase, createTestQueue, results } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { waitForEvent } from "../support/wait.ts";

Deno.test("dead letters: a malformed message with 64 KB of headers is dead-lettered once, and the votes behind it are counted", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const service = await startService(testConfig(db, queue, { BATCH_SIZE: "10" }));
  try {
    // Just under what amqplib can publish, so the copy with its reason headers added would be over it.
    const huge = { "x-padding": "h".repeat(64 * 1024 - 200) };
    await queue.channel.sendToQueue(queue.name, Buffer.from("not json"), { persistent: true, headers: huge });
    await queue.channel.waitForConfirms();
    await queue.publish([1, 2, 3].map((voter) => seedVote(voter, "L-HDR", "oui")));
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.counted === 3);
    assert.deepEqual(await results(db.sql), { "L-HDR": [3, 0] }, "the votes behind it are counted");
    await service.stop();
    const dead = await queue.takeDeadLetters();
    assert.equal(dead.length, 1, "dead-lettered exactly once, not redelivered in a loop");
    const headers = dead[0].properties.headers!;
    assert.equal(headers[REJECT_REASON_HEADER], "invalid_json");
    assert.equal(headers["x-padding"], undefined, "the oversized headers are not copied");
    assert.match(
      String(headers[HEADERS_DROPPED_HEADER]),
      new RegExp(`bytes of headers dropped \\(limit ${MAX_COPIED_HEADER_BYTES}\\)`),
    );
    assert.equal(dead[0].content.toString(), "not json", "the body is kept");
    assert.equal(service.aggregator.totals.deadLettered, 1);
  } finally {
    await service.stop();
  }
});

Deno.test("dead letters: a copy keeps the message's properties and small headers, so it can be traced and replayed", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const service = await startService(testConfig(db, queue));
  try {
    const sentAt = Math.floor(Date.now() / 1000);
    queue.channel.sendToQueue(queue.name, Buffer.from('{"oops": true}'), {
      persistent: true,
      contentType: "application/json",
      contentEncoding: "identity",
      messageId: "msg-42",
      correlationId: "corr-7",
      timestamp: sentAt,
      appId: "validation-worker",
      type: "vote",
      headers: { "x-trace": "abc" },
    });
    await queue.channel.waitForConfirms();
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.deadLettered === 1);
    await service.stop();
    const [dead] = await queue.takeDeadLetters();
    const p = dead.properties;
    assert.equal(p.contentType, "application/json");
    assert.equal(p.contentEncoding, "identity");
    assert.equal(p.messageId, "msg-42");
    assert.equal(p.correlationId, "corr-7");
    assert.equal(p.timestamp, sentAt);
    assert.equal(p.appId, "validation-worker");
    assert.equal(p.type, "vote");
    assert.equal(p.headers?.["x-trace"], "abc");
    assert.equal(p.headers?.[REJECT_REASON_HEADER], "missing_field");
    assert.equal(p.deliveryMode, 2, "persistent");
  } finally {
    await service.stop();
  }
});

Deno.test("dead letters: the original's digest is the same for a redelivery, and differs for another message", () => {
  const delivery = {
    body: new TextEncoder().encode('{"law_id": "L1"}'),
    size: 16,
    contentType: "application/json",
    properties: { messageId: "m-1", timestamp: 1_700_000_000 },
    headers: { "x-trace": "abc", "x-bytes": new Uint8Array([1, 2]) },
  };
  const digest = originalDigest(delivery);
  assert.match(digest, /^[0-9a-f]{64}$/);
  const redelivered = {
    ...delivery,
    headers: { "x-delivery-count": 2, "x-bytes": new Uint8Array([1, 2]), "x-trace": "abc" },
  };
  assert.equal(originalDigest(redelivered), digest, "a delivery count and the headers' order change nothing");
  for (
    const other of [
      { ...delivery, body: new TextEncoder().encode('{"law_id": "L2"}') },
      { ...delivery, size: 17 },
      { ...delivery, properties: { messageId: "m-2", timestamp: 1_700_000_000 } },
      { ...delivery, headers: { ...delivery.headers, "x-trace": "abd" } },
      { ...delivery, contentType: undefined },
    ]
  ) {
    assert.notEqual(originalDigest(other), digest, JSON.stringify(other));
  }
});
