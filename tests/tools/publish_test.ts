import assert from "node:assert/strict";
import amqp from "amqplib";
import { startService } from "../../lib/service.ts";
import { parseVote, type RejectReason } from "../../lib/vote.ts";
import {
  ensureTopology,
  type ExpectedTotals,
  type GenerateOptions,
  generateVotes,
  type MessageKind,
  publishVotes,
} from "../../tools/publish.ts";
import { createTestDatabase, createTestQueue, RABBITMQ_URL, results } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { waitForEvent } from "../support/wait.ts";

const decoder = new TextDecoder();

/** Recounts the generated messages as the service would (first vote of a hash wins), independently of the generator. */
function recount(options: GenerateOptions) {
  const votes = generateVotes(options);
  const firstOfHash = new Map<string, { index: number; law: string; choice: string; timestamp: string | null }>();
  const totals: ExpectedTotals = {};
  const kinds: MessageKind[] = [];
  const reasons: RejectReason[] = [];
  let flipped = 0;
  for (let i = 0; i < votes.count; i++) {
    const parsed = parseVote(votes.body(i));
    kinds.push(votes.kind(i));
    if (!parsed.ok) {
      assert.equal(votes.kind(i), "malformed", `message ${i} is rejected: ${parsed.rejection.detail}`);
      reasons.push(parsed.rejection.reason);
      continue;
    }
    const { hash, lawId, choice, timestamp } = parsed.vote;
    const first = firstOfHash.get(hash);
    if (first) {
      assert.equal(votes.kind(i), "duplicate", `message ${i} reuses the hash of message ${first.index}`);
      assert.equal(lawId, first.law, "a hash is a voter on one law");
      assert.notEqual(timestamp, first.timestamp, "a duplicate attempt differs from its original");
      if (choice !== first.choice) {
        flipped += 1;
        assert.ok(
          i - first.index >= (options.minDuplicateDistance ?? 100),
          `message ${i} changes the choice of message ${first.index}, closer than minDuplicateDistance`,
        );
      }
      continue;
    }
    assert.equal(votes.kind(i), "valid", `message ${i} is a new vote`);
    firstOfHash.set(hash, { index: i, law: lawId, choice, timestamp });
    totals[lawId] ??= { oui: 0, non: 0 };
    totals[lawId][choice] += 1;
  }
  return { votes, totals, kinds, reasons, flipped };
}

const count = (items: string[], item: string) => items.filter((x) => x === item).length;

Deno.test("generateVotes: expected totals are exactly the distinct valid votes", () => {
  const { votes, totals, kinds, reasons, flipped } = recount({
    count: 5000,
    laws: 7,
    duplicateFraction: 0.1,
    malformedFraction: 0.04,
    seed: 1,
    // Pinned, not the service's default prefetch: "most duplicates flip" depends on it.
    minDuplicateDistance: 100,
  });
  assert.deepEqual(votes.expected, totals);
  assert.equal(Object.keys(totals).length, 7);
  assert.deepEqual(Object.keys(totals).sort(), [
    "LAW-001",
    "LAW-002",
    "LAW-003",
    "LAW-004",
    "LAW-005",
    "LAW-006",
    "LAW-007",
  ]);
  const sum = Object.values(totals).reduce((s, t) => s + t.oui + t.non, 0);
  assert.equal(sum, votes.valid);
  assert.deepEqual([count(kinds, "valid"), count(kinds, "duplicate"), count(kinds, "malformed")], [4300, 500, 200]);
  assert.ok(flipped > 400, `most duplicates try another choice (${flipped} of 500)`);
  // Every way of being malformed, each one the service dead-letters.
  assert.deepEqual(
    [...new Set(reasons)].sort(),
    ["invalid_field", "invalid_json", "missing_field", "unknown_choice"],
  );
  assert.deepEqual(votes.malformedByKind, { invalid_json: 50, missing_field: 50, unknown_choice: 50, bad_hash: 50 });
});

Deno.test("generateVotes: fractions are rounded to the nearest message", () => {
  for (
    const [n, dup, bad, expected] of [
      [1000, 0.05, 0.01, [940, 50, 10]],
      [7, 0.5, 0, [3, 4, 0]],
      [10, 0, 1, [0, 0, 10]],
      [3, 0.1, 0.1, [3, 0, 0]],
      [1, 0, 0, [1, 0, 0]],
    ] as const
  ) {
    const votes = generateVotes({ count: n, duplicateFraction: dup, malformedFraction: bad, seed: 3 });
    assert.deepEqual([votes.valid, votes.duplicates, votes.malformed], expected, `${n} × (${dup}, ${bad})`);
  }
});

Deno.test("generateVotes: close duplicates keep the choice, so the totals hold whichever copy a concurrent commit keeps", () => {
  const { votes, totals, flipped } = recount({
    count: 300,
    duplicateFraction: 0.3,
    minDuplicateDistance: 1000,
    seed: 9,
  });
  assert.equal(votes.duplicates, 90);
  assert.equal(flipped, 0);
  assert.deepEqual(votes.expected, totals);
  const far = recount({ count: 300, duplicateFraction: 0.3, minDuplicateDistance: 0, seed: 9 });
  assert.equal(far.flipped, 90);
});

Deno.test("generateVotes: the same seed gives the same messages; another seed, other votes", () => {
  const options = { count: 2000, duplicateFraction: 0.05, malformedFraction: 0.01, laws: 3 };
  const a = generateVotes({ ...options, seed: 42 });
  const b = generateVotes({ ...options, seed: 42 });
  const c = generateVotes({ ...options, seed: 43 });
  const text = (v: typeof a) => [...v.bodies].map((body) => decoder.decode(body));
  assert.deepEqual(text(a), text(b));
  assert.deepEqual(a.expected, b.expected);
  const hashes = new Set(text(a).map((t) => t.match(/"vote_hash":"(\w+)"/)?.[1]));
  assert.ok(text(c).every((t) => !hashes.has(t.match(/"vote_hash":"(\w+)"/)?.[1])), "no hash in common");
  assert.equal(typeof generateVotes({ count: 1 }).seed, "number");
});

Deno.test("generateVotes: options that break their rule are refused with the rule and the value", () => {
  assert.throws(() => generateVotes({ count: -1 }), /'count' must be an integer from 0 .*: current value is -1/);
  assert.throws(() => generateVotes({ laws: 0 }), /'laws' must be an integer/);
  assert.throws(() => generateVotes({ duplicateFraction: 1.5 }), /'duplicateFraction' must be a fraction/);
  assert.throws(() => generateVotes({ malformedFraction: Number.NaN }), /'malformedFraction' must be a fraction/);
  assert.throws(() => generateVotes({ count: 10, duplicateFraction: 0.5, malformedFraction: 0.5 }), /no valid vote/);
  assert.throws(() => generateVotes({ count: 2 }).body(2), /'index' must be an integer from 0 to 1/);
});

Deno.test("publish: the CLI refuses a bad flag with one line and exit code 2", async () => {
  for (const args of [["--dup", "2"], ["-n", "0"], ["--nope"], ["--rate", "fast"], ["--dup", "0.6", "--bad", "0.6"]]) {
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--allow-net", "--allow-env", "--allow-read=.env", "tools/publish.ts", ...args],
      cwd: new URL("../..", import.meta.url).pathname,
    }).output();
    const lines = decoder.decode(stderr).trim().split("\n");
    assert.equal(code, 2, args.join(" "));
    assert.equal(lines.length, 1, decoder.decode(stderr));
    assert.match(lines[0], /^publish: .*(must|Unknown option)/);
    assert.equal(stdout.length, 0);
  }
});

Deno.test("publish: declares the service's topology, publishes confirmed messages, and the service counts them exactly", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue({ declare: false });
  const connection = await amqp.connect(RABBITMQ_URL);
  try {
    const topology = { queue: queue.name, queueType: "classic", deliveryLimit: 20 } as const;
    assert.equal(await ensureTopology(connection, topology), true, "the queue did not exist");
    assert.equal(await ensureTopology(connection, topology), false, "an existing queue is left alone");
    // What the service expects, written out: a different set would fail this with PRECONDITION_FAILED.
    const check = await connection.createChannel();
    await check.assertQueue(queue.name, {
      durable: true,
      arguments: { "x-dead-letter-exchange": `${queue.name}.dlx`, "x-dead-letter-routing-key": queue.dlq },
    });
    await check.close();

    const votes = generateVotes({ count: 3000, duplicateFraction: 0.05, malformedFraction: 0.01, laws: 4 });
    let progress = 0;
    const result = await publishVotes(queue.channel, queue.name, votes.bodies, {
      window: 500,
      onProgress: (n) => progress = n,
    });
    assert.equal(result.published, 3000);
    assert.equal(progress, 3000);
    assert.equal(await queue.count(), 3000, "every confirmed message is in the queue");

    const service = await startService(testConfig(db, queue, { BATCH_SIZE: "200", RABBITMQ_PREFETCH_COUNT: "100" }));
    try {
      await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === votes.count);
    } finally {
      assert.equal(await service.stop(), true);
    }
    const expected = Object.fromEntries(Object.entries(votes.expected).map(([law, t]) => [law, [t.oui, t.non]]));
    assert.deepEqual(await results(db.sql), expected);
    const [{ duplicates }] = await db.sql`select count(*)::int as duplicates from duplicate_attempts`;
    assert.equal(duplicates, votes.duplicates);
    assert.equal(await queue.count(queue.dlq), votes.malformed);
    assert.equal(await queue.count(), 0);
  } finally {
    await connection.close();
  }
});
