/**
 * PostgreSQL failover on a real primary and streaming standby of the test's own
 * (tests/support/postgres_pair.ts), the service a real process counting a preloaded mix of votes:
 *
 * - synchronous replication, the primary killed (-9) mid-drain and the standby promoted, the service
 *   reaching the database through an address that moves (a TCP proxy repointed at the standby) and
 *   through libpq's multi-host URL: exact totals, no duplicates, every malformed vote dead-lettered
 *   once, counting again within 10 s of the promotion, the service never exits, `verify` agrees;
 * - asynchronous replication held back 2 s before the kill: with POSTGRES_MIN_STANDBYS=1 nothing the
 *   broker dropped is missing on the promoted server (exact), and /readyz said why it waited; without
 *   it the loss is measured (`failover: … acknowledged votes lost`) and the start warned of it;
 * - the service pointed at a standby only, votes waiting: it starts, answers 503 saying the server is
 *   read-only, dead-letters nothing valid; promoted, it counts them all exactly.
 *
 * Skipped, saying why, where PostgreSQL's server binaries are missing.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { type PostgresPair, postgresPairSkipReason, startPostgresPair } from "../support/postgres_pair.ts";
import { TcpProxy } from "../support/proxy.ts";
import { createTestQueue, type TestQueue, uniqueName, visibleVotes } from "../support/servers.ts";
import { call, serviceEnv, type ServiceProcess, spawnService } from "../support/service.ts";
import { runTool } from "../support/tool.ts";
import { migrate, MIGRATIONS } from "../../lib/database/migrations.ts";
import { assertDeadLetters, assertExactOutcome, buildMix, type Mix } from "../support/votes.ts";
import { Deadline, delay, withOutputOnFailure } from "../support/wait.ts";

const SKIP = postgresPairSkipReason();
if (SKIP) console.log(`failover_test: skipped: ${SKIP}`);
/** Valid votes of each case's mix. */
const VOTES = Number(Deno.env.get("FAILOVER_VOTES") ?? 20_000);
/** The bound on the stall from the promotion to the next commit. */
const MAX_STALL_MS = 10_000;
/** Votes counted before the primary is killed: mid-drain. */
const KILL_AFTER = 4_000;

/** A case of this file: skipped where the pair cannot run; its servers and processes outlive the sanitizers' view. */
function failoverTest(definition: { name: string; fn: () => Promise<void> }): void {
  Deno.test({ ...definition, ignore: SKIP !== undefined, sanitizeResources: false, sanitizeOps: false });
}

/** One case's servers: the pair, its database on both, a queue with the mix preloaded. */
interface Setup extends AsyncDisposable {
  pair: PostgresPair;
  database: string;
  queue: TestQueue;
  mix: Mix;
  primarySql: postgres.Sql;
  standbySql: postgres.Sql;
}

async function setUp(synchronous: boolean, valid = VOTES): Promise<Setup> {
  const pair = await startPostgresPair({ synchronous });
  const database = uniqueName("h24_failover");
  const disposers: (() => PromiseLike<unknown>)[] = [() => pair[Symbol.asyncDispose]()];
  try {
    await pair.createDatabase(database);
    const queue = await createTestQueue({ prefix: "h24_failover" });
    disposers.unshift(() => queue[Symbol.asyncDispose]());
    const mix = buildMix({ valid, duplicates: 100, copies: 100, malformed: 20, seed: 24 });
    await queue.publish(mix.bodies);
    const primarySql = postgres(pair.primary.urlFor(database), { max: 1, onnotice: () => {} });
    const standbySql = postgres(pair.standby.urlFor(database), { max: 1, onnotice: () => {} });
    disposers.unshift(() => primarySql.end({ timeout: 1 }), () => standbySql.end({ timeout: 1 }));
    return {
      pair,
      database,
      queue,
      mix,
      primarySql,
      standbySql,
      async [Symbol.asyncDispose]() {
        for (const dispose of disposers) await Promise.resolve(dispose()).catch(() => {});
      },
    };
  } catch (error) {
    for (const dispose of disposers) await Promise.resolve(dispose()).catch(() => {});
    throw error;
  }
}

function start(setup: Setup, databaseUrl: string, overrides: Record<string, string> = {}): Promise<ServiceProcess> {
  return spawnService(serviceEnv({ url: databaseUrl }, setup.queue, {
    BATCH_SIZE: "200",
    RABBITMQ_PREFETCH_COUNT: "600",
    MAX_INFLIGHT_BATCHES: "1",
    RETRY_DELAY_SECONDS: "0.2",
    CONNECT_TIMEOUT_SECONDS: "2",
    ...overrides,
  }));
}

/** Until `sql` shows at least `count` votes counted. */
async function untilCounted(sql: postgres.Sql, count: number, deadline: Deadline, what: string): Promise<number> {
  let counted = 0;
  await deadline.until(async () => (counted = await visibleVotes(sql).catch(() => 0)) >= count, what, {
    intervalMs: 20,
    describe: () => `${counted} of ${count}`,
  });
  return counted;
}

/** Every vote counted on the promoted server, the queue empty, the outcome exact, `verify` agreeing there. */
async function assertExactOnPromoted(setup: Setup, service: ServiceProcess, deadline: Deadline): Promise<void> {
  await untilCounted(setup.standbySql, setup.mix.sent.valid, deadline, "every valid vote counted on the promoted");
  await deadline.until(async () => (await setup.queue.count()) === 0, "the vote queue empty", { intervalMs: 100 });
  assert.equal(service.exitCode, undefined, "the service never exited");
  assert.equal(await service.stopWithin(20_000), 0, "graceful stop");
  await assertExactOutcome(setup.standbySql, setup.mix.expected, setup.mix.contents);
  assertDeadLetters(await setup.queue.takeDeadLetters(), setup.mix.malformed);
  const verify = await runTool("verify.ts", [], {
    DATABASE_URL: setup.pair.standby.urlFor(setup.database),
    POSTGRES_SSLMODE: "disable",
  });
  assert.equal(verify.code, 0, `verify on the promoted server:\n${verify.stdout}\n${verify.stderr}`);
}

/**
 * Kills the primary once `KILL_AFTER` votes are counted, runs `between` (repointing an address), promotes
 * the standby, and returns the stall: from the promotion to the first vote counted on the promoted server.
 */
async function failOver(setup: Setup, deadline: Deadline, between: () => unknown = () => {}): Promise<number> {
  await untilCounted(setup.primarySql, KILL_AFTER, deadline, `${KILL_AFTER} votes counted before the kill`);
  await setup.pair.killPrimary();
  deadline.step("primary killed");
  await between();
  await setup.pair.promote();
  const promotedAt = performance.now();
  const before = await visibleVotes(setup.standbySql);
  assert.ok(before < setup.mix.sent.valid, "the primary was killed mid-drain");
  await untilCounted(setup.standbySql, before + 1, deadline, "a commit on the promoted server");
  const stall = Math.round(performance.now() - promotedAt);
  deadline.step(`promoted; counting again after ${stall} ms`);
  return stall;
}

failoverTest({
  name: "failover: synchronous replication through an address that moves (a repointed proxy): exact, stall ≤ 10 s",
  async fn() {
    await using setup = await setUp(true);
    await using address = new TcpProxy(setup.pair.primary.port);
    await using service = await start(setup, `postgres://postgres@127.0.0.1:${address.port}/${setup.database}`);
    const deadline = new Deadline("failover via a moving address", 120_000);
    await withOutputOnFailure(deadline, () => [service], async () => {
      assert.doesNotMatch(service.output(), /can be missing/, "no warning: replication is synchronous");
      const stall = await failOver(setup, deadline, () => address.retarget(setup.pair.standby.port));
      console.log(`failover: moving address, synchronous: counting again ${stall} ms after the promotion`);
      assert.ok(stall <= MAX_STALL_MS, `stall ${stall} ms`);
      await assertExactOnPromoted(setup, service, deadline);
    });
  },
});

failoverTest({
  name: "failover: synchronous replication through the multi-host URL: exact, stall ≤ 10 s, the host in use follows",
  async fn() {
    await using setup = await setUp(true);
    const { primary, standby } = setup.pair;
    // The standby first: only the host that takes writes is used.
    const url = `postgres://postgres@127.0.0.1:${standby.port},127.0.0.1:${primary.port}/${setup.database}`;
    await using service = await start(setup, url);
    const deadline = new Deadline("failover via the multi-host URL", 120_000);
    await withOutputOnFailure(deadline, () => [service], async () => {
      assert.equal((await call(service, "/status")).body.database_host, `127.0.0.1:${primary.port}`);
      const stall = await failOver(setup, deadline);
      console.log(`failover: multi-host URL, synchronous: counting again ${stall} ms after the promotion`);
      assert.ok(stall <= MAX_STALL_MS, `stall ${stall} ms`);
      await deadline.until(
        async () => (await call(service, "/status")).body.database_host === `127.0.0.1:${standby.port}`,
        "/status names the promoted server",
      );
      const metrics = await (await fetch(`${service.url}/metrics`)).text();
      assert.match(metrics, new RegExp(`postgres_connected_host\\{host="127.0.0.1:${standby.port}"\\} 1`));
      assert.match(metrics, new RegExp(`postgres_connected_host\\{host="127.0.0.1:${primary.port}"\\} 0`));
      assert.match(service.output(), new RegExp(`Writing to PostgreSQL at 127.0.0.1:${standby.port}`));
      await assertExactOnPromoted(setup, service, deadline);
    });
  },
});

/**
 * Asynchronous replication mid-drain: the standby held back for 2 s (`whileHeld` runs meanwhile), the primary
 * killed, what it had on its way to the standby lost with it, the standby promoted.
 */
async function heldBackFailover(setup: Setup, deadline: Deadline, whileHeld: () => Promise<void>): Promise<void> {
  await untilCounted(setup.primarySql, KILL_AFTER, deadline, `${KILL_AFTER} votes counted before the hold`);
  const heldAt = performance.now();
  await setup.pair.holdReplication();
  await whileHeld();
  await delay(2000 - (performance.now() - heldAt));
  await setup.pair.killPrimary();
  await setup.pair.replication.cut("refuse");
  await setup.pair.promote();
  deadline.step("held back 2 s, killed, promoted");
}

failoverTest({
  name: "failover: asynchronous replication held back 2 s, POSTGRES_MIN_STANDBYS=1: nothing acknowledged is lost",
  async fn() {
    await using setup = await setUp(false);
    const { primary, standby } = setup.pair;
    const url = `postgres://postgres@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/${setup.database}`;
    await using service = await start(setup, url, { POSTGRES_MIN_STANDBYS: "1" });
    const deadline = new Deadline("failover, asynchronous, POSTGRES_MIN_STANDBYS=1", 120_000);
    await withOutputOnFailure(deadline, () => [service], async () => {
      assert.doesNotMatch(service.output(), /can be missing/, "no warning: POSTGRES_MIN_STANDBYS protects");
      await heldBackFailover(setup, deadline, async () => {
        // Acknowledgements stop while the standby does not flush, and /readyz says why.
        await deadline.until(async () => (await call(service, "/readyz")).status === 503, "/readyz 503 while held");
        const readyz = (await call(service, "/readyz")).body;
        assert.match(readyz.reason, /standby.*POSTGRES_MIN_STANDBYS/, JSON.stringify(readyz));
        const metrics = await (await fetch(`${service.url}/metrics`)).text();
        assert.match(metrics, /postgres_standby_flush_lag_bytes\{standby=/);
      });
      // The promoted server has no standby yet: the batch is committed there again and waits, unacknowledged.
      await deadline.until(async () => {
        const body = (await call(service, "/readyz")).body;
        return /0 streaming/.test(body.reason ?? "") && body.database.startsWith("waiting");
      }, "/readyz: waiting for a standby of the promoted server");
      assert.equal(service.exitCode, undefined, "the service never exited");
      // An operator who accepts running without a standby restarts it with POSTGRES_MIN_STANDBYS=0: what
      // it did not acknowledge comes back, and whatever it did acknowledge must already be on this server.
      await service.stop("SIGKILL");
      await using again = await start(setup, url);
      await assertExactOnPromoted(setup, again, deadline);
    });
  },
});

failoverTest({
  name: "failover: asynchronous replication held back 2 s without POSTGRES_MIN_STANDBYS loses acknowledged votes, " +
    "as the start warned",
  async fn() {
    await using setup = await setUp(false);
    const { primary, standby } = setup.pair;
    const url = `postgres://postgres@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/${setup.database}`;
    await using service = await start(setup, url);
    const deadline = new Deadline("failover, asynchronous, unprotected", 120_000);
    await withOutputOnFailure(deadline, () => [service], async () => {
      assert.match(service.output(), /WRN.*streams to 1 standby\(s\) asynchronously.*POSTGRES_MIN_STANDBYS=1/);
      await heldBackFailover(setup, deadline, async () => {});
      await deadline.until(async () => (await setup.queue.count()) === 0, "the vote queue empty", { intervalMs: 100 });
      // Consumed and acknowledged: what is not counted now never will be.
      const status = async () => (await call(service, "/status")).body;
      await deadline.until(async () => (await status()).inflight_batches === 0, "nothing in flight");
      const lost = setup.mix.sent.valid - await visibleVotes(setup.standbySql);
      console.log(`failover: asynchronous, no POSTGRES_MIN_STANDBYS, held back 2 s: ${lost} acknowledged votes lost`);
      assert.ok(lost > 0, "the held-back WAL held acknowledged votes");
      assert.equal(service.exitCode, undefined, "the service never exited");
    });
  },
});

failoverTest({
  name:
    "failover: pointed at a standby only, votes waiting: 503 saying read-only, nothing dead-lettered; promoted: exact",
  async fn() {
    await using setup = await setUp(false, 2_000);
    // The schema on both servers first, as a primary that has run the service has it.
    await migrate(setup.primarySql);
    await new Deadline("schema replayed", 10_000).until(
      async () => (await setup.standbySql`select count(*)::int as n from schema_migrations`)[0].n === MIGRATIONS.length,
      "the standby has the schema",
    );
    await using service = await start(setup, setup.pair.standby.urlFor(setup.database));
    const deadline = new Deadline("a standby only", 60_000);
    await withOutputOnFailure(deadline, () => [service], async () => {
      let readyz: { reason?: string } = {};
      await deadline.until(
        async () => {
          const answer = await call(service, "/readyz");
          readyz = answer.body;
          return answer.status === 503 && /read-only/.test(readyz.reason ?? "");
        },
        "/readyz 503 saying the server is read-only",
        { describe: () => JSON.stringify(readyz) },
      );
      assert.equal(await visibleVotes(setup.standbySql), 0);
      await setup.pair.promote();
      await deadline.until(async () => (await call(service, "/readyz")).status === 200, "ready once promoted");
      await assertExactOnPromoted(setup, service, deadline);
    });
  },
});
