/**
 * The service behind PgBouncer in `pool_mode=transaction` with PgBouncer's defaults otherwise
 * (tests/support/pgbouncer.ts): no startup parameter it refuses, prepared statements detected off,
 * migrations of a fresh database by three instances started at the same moment (one transaction
 * under `pg_advisory_xact_lock`, which holds in transaction pooling), and a mixed drain through a
 * pool of 3 server connections counted exactly; and live results with the write pool behind it and
 * `RESULTS_DATABASE_URL` direct (`LISTEN` needs a session): the stream follows the commits. Skipped,
 * saying why, where pgbouncer is absent.
 */

import assert from "node:assert/strict";
import { MIGRATIONS } from "../../lib/database/migrations.ts";
import { usePreparedStatements } from "../../lib/database/pooler.ts";
import { pgbouncerSkipReason, startPgBouncer } from "../support/pgbouncer.ts";
import { createTestDatabase, createTestQueue, results, visibleVotes } from "../support/servers.ts";
import { serviceEnv, spawnService } from "../support/service.ts";
import { openStream } from "../support/sse.ts";
import { assertDeadLetters, assertExactOutcome, buildMix } from "../support/votes.ts";
import { Deadline, waitForEvent, withOutputOnFailure } from "../support/wait.ts";

const SKIP = pgbouncerSkipReason();
if (SKIP) console.log(`pgbouncer_test: skipped: ${SKIP}`);

Deno.test({
  name: "pgbouncer: POSTGRES_PREPARE=auto turns prepared statements off behind it, keeps them on direct",
  ignore: SKIP !== undefined,
  async fn() {
    await using db = await createTestDatabase();
    await using bouncer = await startPgBouncer();
    const config = (url: string, prepare: "auto" | "true" | "false" = "auto") => ({
      databaseUrl: url,
      postgresPrepare: prepare,
      postgresSslMode: "disable" as const,
      postgresSslRootCert: undefined,
    });
    assert.equal(await usePreparedStatements(config(bouncer.urlFor(db.name))), false);
    assert.equal(await usePreparedStatements(config(db.url)), true);
    assert.equal(await usePreparedStatements(config(bouncer.urlFor(db.name), "true")), true);
    assert.equal(await usePreparedStatements(config(db.url, "false")), false);
  },
});

Deno.test({
  name: "pgbouncer: three instances started at once through transaction pooling migrate once and count exactly",
  ignore: SKIP !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using db = await createTestDatabase();
    await using queue = await createTestQueue();
    await using bouncer = await startPgBouncer({ poolSize: 3 });
    const mix = buildMix({ valid: 6000, duplicates: 300, copies: 100, malformed: 60, seed: 1906 });
    await queue.publish(mix.bodies);

    const env = serviceEnv(db, queue, { DATABASE_URL: bouncer.urlFor(db.name), BATCH_SIZE: "200" });
    // At the same moment, on a database with no schema: the migrations race for the lock.
    const services = await Promise.all([0, 1, 2].map(() => spawnService(env, { timeoutMs: 60_000 })));
    const deadline = new Deadline("pgbouncer drain", 120_000);
    try {
      await withOutputOnFailure(deadline, () => services, async () => {
        let counted = 0;
        await deadline.until(async () => (counted = await visibleVotes(db.sql)) >= mix.sent.valid, "all counted", {
          intervalMs: 100,
          describe: () => `${counted} of ${mix.sent.valid}`,
        });
        await deadline.until(async () => (await queue.count()) === 0, "the queue empty", { intervalMs: 100 });
        for (const service of services) assert.equal(await service.stopWithin(30_000), 0, "graceful stop");

        const output = services.map((s) => s.output()).join("\n");
        assert.doesNotMatch(output, /unsupported startup parameter|prepared statement .* does not exist/);
        assert.match(output, /prepared statements are off/);
        const applied = output.match(/Applied migrations/g) ?? [];
        assert.equal(applied.length, 1, "one instance applied the migrations, the others found them applied");
        const rows = await db.sql<{ version: number }[]>`select version from schema_migrations order by version`;
        assert.deepEqual(rows.map((r) => r.version), MIGRATIONS.map((m) => m.version));

        await assertExactOutcome(db.sql, mix.expected, mix.contents);
        assertDeadLetters(await queue.takeDeadLetters(), mix.malformed);
        const [{ batches }] = await db.sql<{ batches: number }[]>`
          select count(distinct instance)::int as batches from aggregation_stats where votes_counted > 0`;
        console.log(
          `pgbouncer: ${mix.sent.valid} votes counted by ${batches} instance(s) through 3 server connections`,
        );
      });
    } finally {
      await Promise.all(services.map((s) => s.stop("SIGKILL").catch(() => {})));
    }
  },
});

Deno.test({
  name:
    "pgbouncer: with DATABASE_URL through transaction pooling and RESULTS_DATABASE_URL direct, the stream follows the commits",
  ignore: SKIP !== undefined,
  async fn() {
    await using db = await createTestDatabase();
    await using queue = await createTestQueue();
    await using bouncer = await startPgBouncer({ poolSize: 3 });
    await using service = await spawnService(serviceEnv(db, queue, {
      DATABASE_URL: bouncer.urlFor(db.name),
      RESULTS_DATABASE_URL: db.url,
      RESULTS_EVENT_INTERVAL_MS: "0",
    }));
    assert.match(service.output(), /prepared statements are off/, "the write pool goes through PgBouncer");
    assert.ok(
      service.output().includes(`Results: listening and reading at ${db.url} (RESULTS_DATABASE_URL)`),
      service.output(),
    );
    await using stream = await openStream(`${service.url}/results/stream`);
    await waitForEvent(stream.changed, "event", () => stream.events.length > 0);
    assert.equal(stream.events[0].event, "snapshot");

    const mix = buildMix({ valid: 2000, duplicates: 100, malformed: 20, laws: 7, seed: 1407 });
    await queue.publish(mix.bodies);
    // While the service runs: only notifications bring changes (a resynchronisation happens at start, at a
    // reconnect and at shutdown), and through transaction pooling none would arrive.
    await waitForEvent(
      stream.changed,
      "event",
      () => Object.values(stream.totals()).reduce((n, [oui, non]) => n + oui + non, 0) === mix.sent.valid,
      60_000,
      () => `${JSON.stringify(stream.totals())} of ${mix.sent.valid} votes`,
    );
    assert.deepEqual(stream.totals(), await results(db.sql), "the stream holds the database's totals");
    assert.deepEqual(stream.totals(), mix.expected);
    const totals = stream.events.filter((e) => e.event === "totals").length;
    assert.ok(totals > 1, `${totals} totals events`);
    assert.equal(await service.stopWithin(30_000), 0);
    await waitForEvent(stream.changed, "end", () => stream.ended, 5_000);
    assert.deepEqual(stream.totals(), await results(db.sql));
  },
});
