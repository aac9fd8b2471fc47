import assert from "node:assert/strict";
import { verify } from "../../lib/audit/verify.ts";
import { createTestDatabase, createTestQueue, testPool, untilQueueSettled } from "../support/servers.ts";
import { serviceEnv, type ServiceProcess, spawnService } from "../support/service.ts";
import { runTool } from "../support/tool.ts";
import { assertExactOutcome, buildMix } from "../support/votes.ts";
import { Deadline, withOutputOnFailure } from "../support/wait.ts";

Deno.test("verify: three instances append to one chain; it holds after a mixed drain with a SIGKILL", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const deadline = new Deadline("three instances", 90_000);
  const services: ServiceProcess[] = [];
  await withOutputOnFailure(deadline, () => services, async () => {
    const mix = buildMix({ valid: 6_000, laws: 12, duplicates: 150, copies: 150, malformed: 20, seed: 1515 });
    await queue.publish(mix.bodies);
    const env = serviceEnv(db, queue, { BATCH_SIZE: "50", RABBITMQ_PREFETCH_COUNT: "100", MAX_INFLIGHT_BATCHES: "2" });
    services.push(...await Promise.all([spawnService(env), spawnService(env), spawnService(env)]));
    await deadline.until(async () => {
      const [{ n }] = await db.sql`select count(*)::int as n from vote_ledger`;
      return n >= 20;
    }, "the three are counting");
    // Mid-drain, on the live database: one consistent snapshot, so the totals and the chain agree.
    const live = testPool(db.url);
    try {
      const during = await verify(live, { chunkBatches: 5 });
      assert.equal(during.ok, true, `verify while counting: ${JSON.stringify(during.findings.slice(0, 3))}`);
      assert.ok(during.ledger.batches >= 20);
    } finally {
      await live.end({ timeout: 1 });
    }
    assert.notEqual(await services[1].stop("SIGKILL"), 0);
    deadline.step("SIGKILLed one mid-drain");
    services.push(await spawnService(env));
    await untilQueueSettled(deadline, queue.name);
    for (const s of [services[0], services[2], services[3]]) assert.equal(await s.stop("SIGTERM"), 0);
    await assertExactOutcome(db.sql, mix.expected, mix.contents);

    const pool = testPool(db.url);
    try {
      const report = await verify(pool, { chunkBatches: 7 });
      assert.equal(report.ok, true, JSON.stringify(report.findings.slice(0, 5)));
      assert.equal(report.ledger.votes, mix.contents.size, "every counted vote is in exactly one chained batch");
      assert.equal(report.beforeLedger, 0);
    } finally {
      await pool.end({ timeout: 1 });
    }
    const [{ instances, batches, max }] = await db.sql`
      select count(distinct instance)::int as instances, count(*)::int as batches, max(seq)::int as max from vote_ledger`;
    assert.ok(instances >= 3, `batches from ${instances} instances`);
    assert.equal(batches, max, "one chain, no gap");
    const [{ mismatched }] = await db.sql`
      select count(*)::int as mismatched from vote_ledger l join vote_ledger p on p.seq = l.seq - 1
      where l.prev_digest <> p.digest`;
    assert.equal(mismatched, 0, "each row chains to the one before, whichever instance wrote it");
    const [{ deadlocks }] = await db.sql`
      select deadlocks::int from pg_stat_database where datname = current_database()`;
    assert.equal(deadlocks, 0, "the head row is locked after vote_results' rows, by every instance: no deadlock");

    // The command line agrees, and prints the digest to publish.
    const toolEnv = serviceEnv(db, queue);
    const json = await runTool("verify.ts", ["--json", "--quiet"], toolEnv);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(JSON.parse(json.stdout).ok, true);
    const digest = await runTool("verify.ts", ["--digest", "--quiet"], toolEnv);
    assert.equal(digest.code, 0, digest.stderr);
    assert.match(digest.stdout.trim(), new RegExp(`^${batches} [0-9a-f]{64} \\S+$`));
    const again = await runTool("verify.ts", ["--quiet", "--expect", digest.stdout.trim()], toolEnv);
    assert.equal(again.code, 0, again.stdout + again.stderr);
  });
});
