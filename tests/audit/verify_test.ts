import assert from "node:assert/strict";
import { verify } from "../../lib/audit/verify.ts";
import type { FindingKind } from "../../lib/audit/findings.ts";
import { VoteWriter } from "../../lib/database/writer.ts";
import { testPool } from "../support/servers.ts";
import { bypassingTriggers, countedDatabase, vote } from "./support.ts";

/** The findings as [kind, seq, law] triples, sorted. */
async function findings(url: string): Promise<[FindingKind, number | null, string | null][]> {
  const pool = testPool(url);
  try {
    const report = await verify(pool, { chunkBatches: 2 });
    return report.findings.map((f) =>
      [f.kind, f.seq ?? null, f.lawId ?? null] as [FindingKind, number | null, string | null]
    )
      .sort((a, b) => `${a}`.localeCompare(`${b}`));
  } finally {
    await pool.end({ timeout: 1 });
  }
}

Deno.test("verify: an untouched database agrees, every batch is chained, the head is the last row", async () => {
  await using db = await countedDatabase(5, 20);
  const pool = testPool(db.url);
  try {
    const report = await verify(pool, { chunkBatches: 2 });
    assert.equal(report.ok, true, JSON.stringify(report.findings));
    assert.equal(report.ledger.batches, 5);
    assert.equal(report.ledger.votes, 100);
    assert.equal(report.auditRows, 100);
    const expected: Record<string, { oui: number; non: number }> = {};
    for (let n = 0; n < 100; n++) {
      const law = (expected[`L${(n % 3) + 1}`] ??= { oui: 0, non: 0 });
      if (n % 4 === 0) law.non++;
      else law.oui++;
    }
    assert.deepEqual(Object.fromEntries(report.laws.map((l) => [l.lawId, l.recounted])), expected);
    assert.deepEqual(Object.fromEntries(report.laws.map((l) => [l.lawId, l.stored])), expected);
    const [head] = await db.sql`select seq, digest from vote_ledger order by seq desc limit 1`;
    assert.deepEqual([report.ledger.head.seq, report.ledger.head.digest], [Number(head.seq), head.digest]);
    const links = await db.sql`
      select count(*)::int as n from vote_ledger l join vote_ledger p on p.seq = l.seq - 1 where l.prev_digest = p.digest`;
    assert.equal(links[0].n, 4, "each row names the digest before it");
    // A redelivered batch counts nothing and appends nothing.
    const writer = new VoteWriter(pool, { maxRetryAttempts: 1 });
    await writer.commit([vote(0, "L1", "non")]);
    assert.equal((await verify(pool)).ledger.batches, 5);
  } finally {
    await pool.end({ timeout: 1 });
  }
});

Deno.test("verify: a changed total is located at its law", async () => {
  await using db = await countedDatabase();
  await db.sql`update vote_results set oui_count = oui_count + 1 where law_id = 'L2'`;
  assert.deepEqual(await findings(db.url), [["results_differ", null, "L2"]]);
});

Deno.test("verify: a deleted audit row is located at its batch and law", async () => {
  await using db = await countedDatabase();
  const [row] = await db.sql`
    select a.law_id, l.seq from vote_audit a join vote_ledger l using (batch_id) where l.seq = 3 order by vote_hash limit 1`;
  await db.sql`delete from vote_audit where vote_hash = (
    select vote_hash from vote_audit a join vote_ledger l using (batch_id) where l.seq = 3 order by vote_hash limit 1)`;
  assert.deepEqual(await findings(db.url), [
    ["batch_votes_differ", 3, row.law_id],
    ["results_differ", null, row.law_id],
  ]);
});

Deno.test("verify: an inserted ledger row is located, even when its digest chains", async () => {
  await using db = await countedDatabase();
  // A forger who knows the encoding: a correct digest over an invented batch, appended after the head.
  await db.sql`
    insert into vote_ledger (seq, batch_id, instance, votes, laws, prev_digest, digest)
    select 6, gen_random_uuid(), 'forged', 1, '{"L1": [1, 0, "x"]}', digest, repeat('f', 64)
    from vote_ledger where seq = 5`;
  const found = await findings(db.url);
  assert.deepEqual(found.map(([k, s, l]) => `${k}:${s}:${l}`), [
    "batch_votes_differ:6:L1",
    "head_differs:null:null",
    "ledger_row_altered:6:null",
  ]);
});

Deno.test("verify: reordered ledger rows, and a vote moved to another batch, are located", async () => {
  await using db = await countedDatabase();
  await bypassingTriggers(db.sql, async (tx) => {
    await tx`update vote_ledger set seq = 100 where seq = 2`;
    await tx`update vote_ledger set seq = 2 where seq = 3`;
    await tx`update vote_ledger set seq = 3 where seq = 100`;
  });
  const swapped = await findings(db.url);
  assert.ok(swapped.some(([k, s]) => k === "chain_broken" && s === 2), JSON.stringify(swapped));
  assert.ok(swapped.some(([k, s]) => k === "chain_broken" && s === 3), JSON.stringify(swapped));
  assert.ok(swapped.some(([k, s]) => k === "chain_broken" && s === 4), JSON.stringify(swapped));
  assert.ok(!swapped.some(([k]) => k === "results_differ"), "the totals still agree");

  await using db2 = await countedDatabase();
  const [moved] = await db2.sql`
    update vote_audit set batch_id = (select batch_id from vote_ledger where seq = 4)
    where vote_hash = (select vote_hash from vote_audit a join vote_ledger l using (batch_id) where l.seq = 1
                       order by vote_hash limit 1)
    returning law_id`;
  assert.deepEqual(await findings(db2.url), [
    ["batch_votes_differ", 1, moved.law_id],
    ["batch_votes_differ", 4, moved.law_id],
  ]);
});

Deno.test("verify: an edited vote (hash or choice) and an edited ledger row are located", async () => {
  await using db = await countedDatabase();
  // Same counts, another vote: only the law's digest tells.
  await db.sql`
    update vote_audit set vote_hash = repeat('e', 64)
    where vote_hash = (select vote_hash from vote_audit a join vote_ledger l using (batch_id) where l.seq = 2
                       and a.law_id = 'L3' order by vote_hash limit 1)`;
  assert.deepEqual(await findings(db.url), [["batch_votes_changed", 2, "L3"]]);

  await using db2 = await countedDatabase();
  // A choice flipped in the audit trail and in vote_results alike: the totals agree, the batch does not.
  const [flipped] = await db2.sql`
    update vote_audit set vote = 'oui', choice = 'oui'
    where vote_hash = (select vote_hash from vote_audit a join vote_ledger l using (batch_id) where l.seq = 5
                       and coalesce(a.vote, a.choice) = 'non' order by vote_hash limit 1)
    returning law_id`;
  await db2.sql`update vote_results set oui_count = oui_count + 1, non_count = non_count - 1
                where law_id = ${flipped.law_id}`;
  assert.deepEqual(await findings(db2.url), [["batch_votes_differ", 5, flipped.law_id]]);

  await using db3 = await countedDatabase();
  await bypassingTriggers(db3.sql, (tx) => tx`update vote_ledger set instance = 'x', votes = votes where seq = 1`);
  assert.deepEqual(await findings(db3.url), [], "instance and time are not part of the digest");
  await bypassingTriggers(db3.sql, (tx) => tx`update vote_ledger set laws = laws - 'L1' where seq = 1`);
  const edited = await findings(db3.url);
  assert.deepEqual(edited.map(([k, s, l]) => `${k}:${s}:${l}`), [
    "batch_votes_differ:1:L1",
    "ledger_row_altered:1:null",
  ]);
});

Deno.test("verify: the ledger refuses UPDATE, DELETE and TRUNCATE even to its owner", async () => {
  await using db = await countedDatabase(1, 3);
  for (
    const statement of [
      db.sql`delete from vote_ledger`,
      db.sql`update vote_ledger set votes = 9`,
      db.sql`truncate vote_ledger`,
    ]
  ) {
    await assert.rejects(statement, /vote_ledger is append-only/);
  }
});

Deno.test("verify: a published digest is checked; votes counted before the ledger are recounted, not chained", async () => {
  await using db = await countedDatabase(3, 10);
  const pool = testPool(db.url);
  try {
    const first = await verify(pool);
    const published = { digest: first.ledger.head.digest, seq: first.ledger.head.seq };
    assert.equal((await verify(pool, { expect: [published] })).ok, true);
    // Later batches keep the published digest in the chain.
    await new VoteWriter(pool, { maxRetryAttempts: 1 }).commit([vote(1000, "L1", "oui")]);
    assert.equal((await verify(pool, { expect: [published] })).ok, true);
    const forged = await verify(pool, { expect: [{ digest: "a".repeat(64) }] });
    assert.deepEqual(forged.findings.map((f) => f.kind), ["expected_digest_missing"]);

    // A row from before migration 004 (no batch) and its total.
    await db.sql`insert into vote_audit (vote_hash, law_id, vote, choice, status) values (${
      "b".repeat(64)
    }, 'L9', 'non', 'non', 'aggregated')`;
    await db.sql`insert into vote_results (law_id, oui_count, non_count) values ('L9', 0, 1)`;
    const legacy = await verify(pool);
    assert.equal(legacy.ok, true, JSON.stringify(legacy.findings));
    assert.equal(legacy.beforeLedger, 1);
    // An audit row naming a batch the ledger does not hold.
    await db.sql`update vote_audit set batch_id = gen_random_uuid() where vote_hash = ${"b".repeat(64)}`;
    const unknown = await verify(pool);
    assert.deepEqual(unknown.findings.map((f) => [f.kind, f.lawId]), [["unknown_batch", "L9"]]);
  } finally {
    await pool.end({ timeout: 1 });
  }
});

Deno.test("verify: a vote the validation worker recorded first is chained in the batch that counted it", async () => {
  await using db = await countedDatabase(1, 4);
  const worker = vote(500, "L2", "non");
  // The worker's own insert, as the seed writes it: no batch.
  await db
    .sql`insert into vote_audit (vote_hash, law_id, vote, status) values (${worker.hash}, 'L2', 'non', 'validated')`;
  const pool = testPool(db.url);
  try {
    await new VoteWriter(pool, { maxRetryAttempts: 1 }).commit([worker, vote(501, "L2", "oui")]);
    const [row] = await db.sql`
      select l.seq from vote_audit a join vote_ledger l using (batch_id) where a.vote_hash = ${worker.hash}`;
    assert.equal(Number(row.seq), 2, "the worker's row now names the batch");
    const report = await verify(pool);
    assert.equal(report.ok, true, JSON.stringify(report.findings));
    assert.equal(report.ledger.votes, 6);
  } finally {
    await pool.end({ timeout: 1 });
  }
});
