/**
 * A results-only instance (`vote-aggregator results`, `deno task results`)
 * against the real database, beside a counting instance on the real broker: it
 * runs as the read-only role of sql/role_results_reader.sql (every transaction
 * read-only, as on a standby) under its own permission set (no broker host),
 * serves the same results as the counting instance and follows them, answers
 * nothing of the counting's control plane, and refuses to start, saying why,
 * on a database without the schema.
 */
import assert from "node:assert/strict";
import { loadConfig } from "../../lib/config/config.ts";
import { permissionFlags } from "../../tools/permissions.ts";
import { resultsService } from "../support/results.ts";
import { createTestDatabase, results } from "../support/servers.ts";
import { call, freePort, spawnService } from "../support/service.ts";
import { openStream } from "../support/sse.ts";
import { commandLine } from "../support/process.ts";
import { buildMix } from "../support/votes.ts";
import { waitUntil } from "../support/wait.ts";

const ROLE_SCRIPT = new URL("../../sql/role_results_reader.sql", import.meta.url);

/** `url` as the results reader role. */
function asReader(url: string): string {
  const parsed = new URL(url);
  parsed.username = "vote_results_reader";
  return parsed.toString();
}

/** A results-only instance's environment: the reader's URL, a broker it must never reach. */
function resultsEnv(databaseUrl: string): Record<string, string> {
  return {
    RESULTS_DATABASE_URL: databaseUrl,
    DATABASE_URL: "postgres://nobody@db.invalid:5432/none",
    RABBITMQ_URL: "amqp://guest:guest@broker.invalid:5672/",
    POSTGRES_SSLMODE: "disable",
    HTTP_HOST: "127.0.0.1",
    PROMETHEUS_PORT: String(freePort()),
    LOG_LEVEL: "INFO",
  };
}

Deno.test("results only: the read-only role, no broker; same results as the counting instance, followed; no control plane", async () => {
  await using setup = await resultsService("h26_only");
  const { db, queue, service } = setup;
  await db.sql.unsafe(await Deno.readTextFile(ROLE_SCRIPT));
  const env = resultsEnv(asReader(db.url));
  const flags = permissionFlags(loadConfig(env), { role: "results" });
  const net = flags.find((f) => f.startsWith("--allow-net="))!;
  assert.ok(!/5672|broker|db\.invalid/.test(net), `no broker, no DATABASE_URL host: ${net}`);
  await using reader = await spawnService(env, { permissions: flags, args: ["results"] });

  const mix = buildMix({ valid: 400, laws: 3, seed: 31 });
  await queue.publish(mix.bodies);
  await waitUntil(async () => JSON.stringify(await results(db.sql)) === JSON.stringify(mix.expected), "counted");
  // It reads every second: within a few, the same bytes and tag as the counting instance.
  await waitUntil(
    async () => {
      const [mine, theirs] = await Promise.all([fetch(`${reader.url}/results`), fetch(`${service.url}/results`)]);
      await Promise.all([mine.body?.cancel(), theirs.body?.cancel()]);
      return mine.headers.get("etag") === theirs.headers.get("etag");
    },
    "the results-only instance shows the counted totals",
    10_000,
  );
  await using stream = await openStream(`${reader.url}/results/stream`);
  await waitUntil(() => JSON.stringify(stream.totals()) === JSON.stringify(mix.expected), "its stream's snapshot");
  const more = buildMix({ valid: 100, laws: 3, seed: 32, voterBase: 90_000 });
  await queue.publish(more.bodies);
  await waitUntil(
    async () =>
      JSON.stringify((await call(reader, "/results")).body.laws.map((l: { total_votes: number }) => l.total_votes)) ===
        JSON.stringify(Object.values(await results(db.sql)).map(([oui, non]) => oui + non)),
    "it follows the counting",
    10_000,
  );
  await waitUntil(() => stream.events.some((e) => e.event === "totals"), "its stream follows too", 10_000);

  assert.equal((await call(reader, "/")).status, 200, "the page");
  assert.equal((await call(reader, "/results/L01")).status, 200);
  assert.equal((await call(reader, "/healthz")).status, 200);
  const ready = await call(reader, "/readyz");
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  const metrics = String((await call(reader, "/metrics")).body);
  assert.match(metrics, /^results_stream_clients 1$/m);
  assert.doesNotMatch(metrics, /votes_aggregated_total|aggregator_ready/, "no counting metric");
  for (const [path, method] of [["/status", "GET"], ["/flush", "POST"], ["/pause", "POST"], ["/resume", "POST"]]) {
    assert.equal((await call(reader, path, { method })).status, 404, `${method} ${path}`);
  }

  // Its connections: the reader role, no listening connection (a standby refuses LISTEN), read-only sessions.
  const sessions = await db.sql<{ usename: string; application_name: string }[]>`
    select usename, application_name from pg_stat_activity
    where datname = ${db.name} and usename = 'vote_results_reader'`;
  assert.ok(sessions.length > 0, "it reads as vote_results_reader");
  assert.deepEqual([...new Set(sessions.map((s) => s.application_name))], ["vote-aggregator-results"]);
  const role = (await import("postgres")).default(asReader(db.url), { max: 1, onnotice: () => {} });
  try {
    const [{ default_transaction_read_only: readOnly }] = await role`show default_transaction_read_only`;
    assert.equal(readOnly, "on", "the role's every transaction is read-only");
    await assert.rejects(role`update vote_results set oui_count = 0`, (e: { code?: string }) => e.code === "25006");
    await assert.rejects(role`select * from vote_audit`, (e: { code?: string }) => e.code === "42501");
    await assert.rejects(
      role.begin("read write", (tx) => tx`update vote_results set oui_count = 0`),
      (e: { code?: string }) => e.code === "42501",
      "and it may not write even in a read-write transaction",
    );
  } finally {
    await role.end({ timeout: 1 });
  }
  assert.equal(await reader.stop(), 0, reader.output());
  assert.doesNotMatch(reader.output(), /NotCapable|Requires \w+ access|EPERM|Applied migrations/);
  assert.equal(await service.stop(), 0);
});

Deno.test("results only: deno task results starts it under its own permission set", async () => {
  await using setup = await resultsService("h26_only");
  const { db, queue, service } = setup;
  await db.sql.unsafe(await Deno.readTextFile(ROLE_SCRIPT));
  await queue.publish(buildMix({ valid: 30, laws: 1, seed: 33 }).bodies);
  await waitUntil(async () => Object.keys(await results(db.sql)).length === 1, "counted");
  await using reader = await spawnService(resultsEnv(asReader(db.url)), { viaStartTask: true, task: "results" });
  await waitUntil(async () => (await call(reader, "/results")).body.laws?.length === 1, "it serves the law", 10_000);
  const command = commandLine(reader.pid);
  assert.match(command, /--allow-net=127\.0\.0\.1:5432,127\.0\.0\.1:\d+ .*main\.ts results$/, command);
  assert.equal(await reader.stop(), 0, reader.output());
  assert.equal(await service.stop(), 0);
});

Deno.test("results only: a database without the schema, or RESULTS_ENABLED=false, stops the start, saying why", async () => {
  await using db = await createTestDatabase();
  const env = resultsEnv(db.url);
  await using reader = await spawnService(env, {
    permissions: permissionFlags(loadConfig(env), { role: "results" }),
    args: ["results"],
    waitHealthy: false,
  });
  assert.equal(await reader.exited, 1);
  assert.match(
    reader.output(),
    /The schema is missing at .* a results-only instance never migrates\. Start a counting/,
  );
  const [{ count }] = await db.sql`select count(*)::int as count from pg_tables where schemaname = 'public'`;
  assert.equal(count, 0, "nothing was created");

  await using off = await spawnService({ ...env, RESULTS_ENABLED: "false" }, { args: ["results"], waitHealthy: false });
  assert.equal(await off.exited, 2);
  assert.match(off.output(), /^vote-aggregator results: RESULTS_ENABLED=false turns off the results/m);
});

Deno.test("results only: a database that does not answer is waited for, until STARTUP_TIMEOUT_SECONDS ends the start", async () => {
  await using db = await createTestDatabase();
  const closed = new URL(db.url);
  closed.port = String(freePort()); // nothing listens there: every attempt is refused
  const env = { ...resultsEnv(closed.toString()), STARTUP_TIMEOUT_SECONDS: "2" };
  await using reader = await spawnService(env, {
    permissions: permissionFlags(loadConfig(env), { role: "results" }),
    args: ["results"],
    waitHealthy: false,
  });
  assert.equal(await reader.exited, 1);
  const output = reader.output();
  assert.ok(
    output.match(/Cannot connect to PostgreSQL at .*; retrying in \d+ ms/g)!.length >= 2,
    `retried, each failure logged with the next delay:\n${output}`,
  );
  assert.match(
    output,
    /Start-up did not finish within 2 s \(STARTUP_TIMEOUT_SECONDS\): database: cannot read the schema/,
  );
});
