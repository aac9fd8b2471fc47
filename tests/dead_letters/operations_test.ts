import amqp from "amqplib";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { BODY_TRUNCATED_HEADER, REJECT_DETAIL_HEADER, REJECT_REASON_HEADER } from "../../lib/broker/dead_letter.ts";
import { boundedBody } from "../../lib/dead_letters/letter.ts";
import { purge, replay, show, summary } from "../../lib/dead_letters/operations.ts";
import { createTestQueue, RABBITMQ_URL, type TestQueue, withChannel } from "../support/servers.ts";
import { seedVote } from "../support/votes.ts";
import { waitUntil } from "../support/wait.ts";

/** Publishes letters straight to the DLQ, as the service's DeadLetterPublisher would, in order. */
async function deadLetter(queue: TestQueue, letters: { body: string; reason: string }[]): Promise<void> {
  await withChannel(async (ch) => {
    for (const { body, reason } of letters) {
      ch.sendToQueue(queue.dlq, Buffer.from(body), {
        persistent: true,
        headers: {
          [REJECT_REASON_HEADER]: reason,
          [REJECT_DETAIL_HEADER]: `why ${reason}`,
          "x-original-queue": queue.name,
        },
      });
    }
    await ch.waitForConfirms();
  });
}

/** The DLQ's bodies in queue order, taking them (the end of a test). */
async function drainedBodies(queue: TestQueue): Promise<string[]> {
  return (await queue.takeDeadLetters()).map((m) => m.content.toString());
}

async function withConfirmChannel<T>(fn: (ch: amqp.ConfirmChannel) => Promise<T>): Promise<T> {
  return await withChannel(fn);
}

const letters = [
  { body: seedVote(1, "L1", "oui"), reason: "database_rejected" },
  { body: "not json \u001b[31mred\u001b[0m \u202egnp.exe", reason: "invalid_json" },
  { body: seedVote(2, "L2", "maybe"), reason: "unknown_choice" },
  { body: seedVote(3, "L1", "non"), reason: "database_rejected" },
  { body: "x".repeat(5000), reason: "oversized" },
];

Deno.test("dead letters: summary and show read the DLQ without consuming or reordering it", async () => {
  await using queue = await createTestQueue();
  await deadLetter(queue, letters);
  const s = await withConfirmChannel((ch) => summary(ch, queue.dlq));
  assert.equal(s.total, 5);
  assert.deepEqual(s.byReason, { database_rejected: 2, invalid_json: 1, unknown_choice: 1, oversized: 1 });
  assert.deepEqual(s.byLaw, { L1: 2, L2: 1, "(none)": 2 });
  assert.deepEqual(s.bySource, { service: 5 });
  assert.equal(s.oldest?.position, 0);
  assert.equal(s.newest?.position, 4);

  const shown = await withConfirmChannel((ch) => show(ch, queue.dlq, { reason: "invalid_json" }));
  assert.equal(shown.length, 1);
  assert.equal(shown[0].detail, "why invalid_json");
  assert.ok(!shown[0].body.includes("\u001b") && !shown[0].body.includes("\u202e"), `escaped: ${shown[0].body}`);
  assert.match(shown[0].body, /\\u001b\[31mred/);
  assert.match(shown[0].body, /\\u202e/);
  const limited = await withConfirmChannel((ch) => show(ch, queue.dlq, { limit: 2, maxBodyChars: 10 }));
  assert.deepEqual(limited.map((l) => l.position), [0, 1]);
  const big = await withConfirmChannel((ch) => show(ch, queue.dlq, { reason: "oversized", maxBodyChars: 10 }));
  assert.equal(big[0].body, "xxxxxxxxxx… (5000 bytes)");

  assert.deepEqual(await drainedBodies(queue), letters.map((l) => l.body), "all there, in the same order");
});

Deno.test("dead letters: the broker's own (expired, maxlen, delivery_limit) are read from x-death", async () => {
  await using queue = await createTestQueue();
  const source = (suffix: string) => `${queue.name}.${suffix}`;
  const toDlq = { "x-dead-letter-exchange": queue.dlx, "x-dead-letter-routing-key": queue.dlq };
  const connection = await amqp.connect(RABBITMQ_URL);
  try {
    const ch = await connection.createConfirmChannel();
    await ch.assertQueue(source("ttl"), { arguments: { ...toDlq, "x-message-ttl": 1 } });
    await ch.assertQueue(source("max"), { arguments: { ...toDlq, "x-max-length": 1 } });
    await ch.assertQueue(source("quorum"), {
      durable: true,
      arguments: { ...toDlq, "x-queue-type": "quorum", "x-delivery-limit": 1 },
    });
    ch.sendToQueue(source("ttl"), Buffer.from(seedVote(10, "L7", "oui")));
    for (const n of [11, 12, 13]) ch.sendToQueue(source("max"), Buffer.from(seedVote(n, "L8", "non")));
    ch.sendToQueue(source("quorum"), Buffer.from(seedVote(14, "L9", "oui")));
    await ch.waitForConfirms();
    // Refused (requeued) past its delivery limit: the broker dead-letters it.
    for (let i = 0; i < 3; i++) {
      const m = await ch.get(source("quorum"));
      if (m) ch.nack(m, false, true);
    }
    await waitUntil(async () => (await queue.count(queue.dlq)) === 4, "4 broker dead letters");
    const s = await summary(ch, queue.dlq);
    assert.deepEqual(s.byReason, { expired: 1, maxlen: 2, delivery_limit: 1 });
    assert.deepEqual(s.bySource, { broker: 4 });
    assert.deepEqual(s.byLaw, { L7: 1, L8: 2, L9: 1 });
    assert.ok(s.oldest?.deadLetteredAt && s.newest?.deadLetteredAt, "the broker's x-death time");
    assert.equal((await show(ch, queue.dlq, { reason: "expired" }))[0].originalQueue, source("ttl"));
    for (const suffix of ["ttl", "max", "quorum"]) await ch.deleteQueue(source(suffix));
  } finally {
    await connection.close();
  }
});

Deno.test("dead letters: purge removes only its reason; replay republishes confirmed and leaves the rest in place", async () => {
  await using queue = await createTestQueue();
  await deadLetter(queue, letters);
  const purged = await withConfirmChannel((ch) => purge(ch, queue.dlq, "unknown_choice"));
  assert.deepEqual(purged, { purged: 1, kept: 4 });
  const replayed = await withConfirmChannel((ch) => replay(ch, queue.dlq, queue.name, { reason: "database_rejected" }));
  assert.deepEqual(replayed, { replayed: 2, extraCopies: 0, kept: 2, truncated: 0 });
  const copies = await withChannel(async (ch) => {
    const out = [];
    for (let m = await ch.get(queue.name, { noAck: true }); m; m = await ch.get(queue.name, { noAck: true })) {
      out.push(m);
    }
    return out;
  });
  assert.deepEqual(copies.map((m) => m.content.toString()), [letters[0].body, letters[3].body], "in DLQ order");
  for (const m of copies) {
    assert.equal(m.properties.headers?.[REJECT_REASON_HEADER], undefined, "the dead-lettering's headers are dropped");
    assert.equal(m.properties.headers?.["x-replayed-from"], queue.dlq);
  }
  assert.deepEqual(await drainedBodies(queue), [letters[1].body, letters[4].body]);
});

Deno.test("dead letters: a copy whose body was truncated is never replayed", async () => {
  await using queue = await createTestQueue();
  await withChannel(async (ch) => {
    ch.sendToQueue(queue.dlq, Buffer.from(seedVote(7, "L1", "oui")), {
      headers: { [REJECT_REASON_HEADER]: "oversized", [BODY_TRUNCATED_HEADER]: "20000 bytes; the first 16384 kept" },
    });
    await ch.waitForConfirms();
  });
  const r = await withConfirmChannel((ch) => replay(ch, queue.dlq, queue.name, {}));
  assert.deepEqual(r, { replayed: 0, extraCopies: 0, kept: 1, truncated: 1 });
  assert.equal(await queue.count(), 0);
  assert.equal(await queue.count(queue.dlq), 1);
});

Deno.test("dead letters: boundedBody escapes what a terminal would act on and marks invalid UTF-8", () => {
  assert.equal(boundedBody(new TextEncoder().encode("a\nb\u0007\u009b"), 50), "a\\nb\\u0007\\u009b");
  assert.equal(boundedBody(new Uint8Array([0x61, 0xff, 0x62]), 50), "a\ufffdb");
  assert.equal(boundedBody(new TextEncoder().encode("ééé"), 2), "éé… (6 bytes)");
});

Deno.test("dead letters: a tool that dies mid-browse loses and reorders nothing (the broker requeues)", async () => {
  await using queue = await createTestQueue();
  await deadLetter(queue, letters);
  const connection = await amqp.connect(RABBITMQ_URL);
  const ch = await connection.createConfirmChannel();
  let seen = 0;
  // A visitor that fails on the third letter, as a crash would; the process's connection then goes away.
  await assert.rejects(
    browseThenDie(ch, queue.dlq, () => ++seen === 3),
    /died/,
  );
  await connection.close();
  assert.deepEqual(await drainedBodies(queue), letters.map((l) => l.body));
});

async function browseThenDie(ch: amqp.ConfirmChannel, dlq: string, dies: () => boolean): Promise<void> {
  for (;;) {
    const m = await ch.get(dlq, { noAck: false });
    if (m === false) return;
    if (dies()) throw new Error("died");
  }
}
