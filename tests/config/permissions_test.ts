/**
 * The permission set of tools/permissions.ts, tested through the real service:
 * `main.ts` runs under exactly those flags on its own database and queue and
 * counts a vote; pointed at a host outside them it stops at start with an error
 * naming that host; and `deno task start` passes SIGTERM and the exit code on.
 */

import assert from "node:assert/strict";
import { envWithDotenv, loadConfig } from "../../lib/config/config.ts";
import {
  COMPILE_BROKER_HOSTS,
  COMPILE_DATABASE_HOSTS,
  deniedEndpoints,
  IGNORED_ENV,
  permissionFlags,
  shellQuote,
} from "../../tools/permissions.ts";
import { compileArgs, EXIT_DENORT_UNAVAILABLE } from "../../tools/compile.ts";
import { createTestDatabase, createTestQueue, RABBITMQ_URL, results } from "../support/servers.ts";
import { collectOutput, freePort, spawnService } from "../support/service.ts";
import { openStream } from "../support/sse.ts";
import { seedVote } from "../support/votes.ts";
import { waitUntil } from "../support/wait.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
// Longest a refused start may take: well under the broker client's retry schedule (~15 s).
const PROMPT_FAILURE_MS = 8_000;

/** The flags for `env` as the service itself would see it (the repository's `.env` included, env winning). */
async function flagsFor(env: Record<string, string>): Promise<string[]> {
  return permissionFlags(loadConfig(await envWithDotenv(`${ROOT}.env`, (name) => env[name])));
}

function flag(flags: string[], name: string): string[] {
  const found = flags.find((f) => f.startsWith(`${name}=`));
  assert.ok(found, `no ${name} in ${flags.join(" ")}`);
  return found.slice(name.length + 1).split(",");
}

/** `url` with its host replaced: another name for the same server, outside an allow-list computed for `url`. */
function aliasHost(url: string): string {
  const parsed = new URL(url);
  parsed.hostname = parsed.hostname === "localhost" ? "127.0.0.1" : "localhost";
  return parsed.toString();
}

function serviceEnv(db: { url: string }, queue: { name: string }): Record<string, string> {
  return {
    DATABASE_URL: db.url,
    RABBITMQ_URL,
    RABBITMQ_QUEUE: queue.name,
    HTTP_HOST: "127.0.0.1",
    PROMETHEUS_PORT: String(freePort()),
    POSTGRES_SSLMODE: "disable",
    BATCH_TIMEOUT_SECONDS: "0.05",
  };
}

async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("permissions: the default configuration's flags", () => {
  const flags = permissionFlags(loadConfig({}));
  assert.deepEqual(flag(flags, "--allow-net"), ["localhost:5672", "localhost:5432", "0.0.0.0:8001"]);
  assert.deepEqual(flag(flags, "--allow-read"), [".env"]);
  assert.deepEqual(flag(flags, "--ignore-env"), [...IGNORED_ENV]);
  assert.ok(flags.includes("--no-prompt"));
  // Nothing broad: every permission flag carries a list.
  assert.deepEqual(flags.filter((f) => f.startsWith("--allow-") && !f.includes("=")), []);
  assert.ok(!flags.some((f) => /^--allow-(sys|run|write|ffi|all|import)/.test(f) || f === "-A"), flags.join(" "));
});

Deno.test("permissions: --allow-env is exactly the variables lib/config/config.ts reads", async () => {
  const read = new Set<string>();
  loadConfig((name) => (read.add(name), undefined));
  const flags = permissionFlags(loadConfig({}));
  assert.deepEqual(new Set(flag(flags, "--allow-env")), read);
  // And none of those is silenced by --ignore-env.
  assert.deepEqual(flag(flags, "--ignore-env").filter((name) => read.has(name)), []);
  // The file the flags come from, run as a program, prints the same flags.
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-env", "--allow-read=.env", "tools/permissions.ts"],
    cwd: ROOT,
    env: { RABBITMQ_HOST: "broker.internal", POSTGRES_PORT: "6543" },
  }).output();
  assert.equal(code, 0);
  assert.equal(
    new TextDecoder().decode(stdout).trim(),
    shellQuote(await flagsFor({ RABBITMQ_HOST: "broker.internal", POSTGRES_PORT: "6543" })),
  );
});

Deno.test("permissions: hosts and files follow the configuration", () => {
  const flags = permissionFlags(loadConfig({
    RABBITMQ_URL: "amqps://u:p@mq.example.net/vh",
    DATABASE_URL: "postgres://u:p@[::1]/votes",
    HTTP_HOST: "127.0.0.1",
    PROMETHEUS_PORT: "0",
    RABBITMQ_CA_FILE: "/etc/ssl/mq-ca.pem",
    POSTGRES_SSLROOTCERT: "/etc/ssl/pg ca.pem",
  }));
  // amqps defaults to 5671; IPv6 literals keep their brackets; port 0 (any free port) allows the host.
  assert.deepEqual(flag(flags, "--allow-net"), ["mq.example.net:5671", "[::1]:5432", "127.0.0.1"]);
  assert.deepEqual(flag(flags, "--allow-read"), [".env", "/etc/ssl/mq-ca.pem", "/etc/ssl/pg ca.pem"]);
  assert.match(shellQuote(flags), / '--allow-read=\.env,\/etc\/ssl\/mq-ca\.pem,\/etc\/ssl\/pg ca\.pem' /);
});

Deno.test("permissions: a results-only instance's set names no broker, and only the results' database", () => {
  const net = (env: Record<string, string>) =>
    flag(permissionFlags(loadConfig(env), { role: "results" }), "--allow-net");
  assert.deepEqual(net({ RABBITMQ_HOST: "mq.internal", POSTGRES_HOST: "primary" }), ["primary:5432", "0.0.0.0:8001"]);
  assert.deepEqual(
    net({ DATABASE_URL: "postgres://u@primary/db", RESULTS_DATABASE_URL: "postgres://r@standby:6432/db" }),
    ["standby:6432", "0.0.0.0:8001"],
  );
});

Deno.test({
  name: "permissions: a results-only instance checks the results' database and its listen address, no broker",
  permissions: { net: ["0.0.0.0:8001"] },
  fn() {
    const config = loadConfig({ RESULTS_DATABASE_URL: "postgres://r@standby/db", RABBITMQ_HOST: "mq.internal" });
    const denied = deniedEndpoints(config, undefined, "results");
    assert.equal(denied.length, 1, denied.join("\n"));
    assert.match(denied[0], /PostgreSQL at standby:5432 \(RESULTS_DATABASE_URL\)/);
  },
});

Deno.test("permissions: RESULTS_DATABASE_URL's host:port is allowed beside DATABASE_URL's, once when they are one", () => {
  const net = (env: Record<string, string>) => flag(permissionFlags(loadConfig(env)), "--allow-net");
  const pooled = { DATABASE_URL: "postgres://u:p@pgbouncer:6432/votes", RABBITMQ_HOST: "mq" };
  assert.deepEqual(net({ ...pooled, RESULTS_DATABASE_URL: "postgresql://u:p@[fd00::5]/votes" }), [
    "mq:5672",
    "pgbouncer:6432",
    "[fd00::5]:5432",
    "0.0.0.0:8001",
  ]);
  assert.deepEqual(net(pooled), net({ ...pooled, RESULTS_DATABASE_URL: "postgres://other:q@pgbouncer:6432/votes" }));
  const compiled = flag(
    permissionFlags(loadConfig({ ...pooled, RESULTS_DATABASE_URL: "postgres://u@db.internal/votes" }), {
      forCompile: true,
    }),
    "--allow-net",
  );
  assert.ok(compiled.includes("db.internal:5432"), compiled.join(","));
});

Deno.test({
  name: "permissions: a RESULTS_DATABASE_URL outside --allow-net is named at start",
  permissions: { net: ["127.0.0.1:6432", "0.0.0.0:8001", "127.0.0.1:5672"] },
  fn() {
    const denied = deniedEndpoints(loadConfig({
      DATABASE_URL: "postgres://u@127.0.0.1:6432/votes",
      RESULTS_DATABASE_URL: "postgres://u@127.0.0.1:5432/votes",
      RABBITMQ_HOST: "127.0.0.1",
    }));
    assert.equal(denied.length, 1, denied.join("\n"));
    assert.match(denied[0], /PostgreSQL at 127\.0\.0\.1:5432 \(RESULTS_DATABASE_URL\)/);
  },
});

Deno.test("permissions: a compile adds the compose service names and localhost, and never prompts anyway", () => {
  const flags = permissionFlags(loadConfig({ RABBITMQ_HOST: "mq.internal", POSTGRES_PORT: "6432" }), {
    forCompile: true,
  });
  const net = flag(flags, "--allow-net");
  for (const host of ["mq.internal", ...COMPILE_BROKER_HOSTS]) assert.ok(net.includes(`${host}:5672`), host);
  for (const host of COMPILE_DATABASE_HOSTS) assert.ok(net.includes(`${host}:6432`), host);
  assert.ok(net.includes("0.0.0.0:8001"));
  assert.equal(net.length, new Set(net).size);
  assert.ok(!flags.includes("--no-prompt"));
});

Deno.test("permissions: deno task compile bakes in the compile flags, and says so in one line when denort is missing", async () => {
  const flags = permissionFlags(loadConfig({}), { forCompile: true });
  const args = compileArgs(flags, { npmCache: "/cache/npm", output: "out/bin" });
  assert.deepEqual(args.slice(1, 1 + flags.length), flags);
  assert.ok(args.includes("--exclude=/cache/npm/registry.npmjs.org/bintrees/1.0.2/test"));
  assert.deepEqual(args.slice(-3), ["--output", "out/bin", "main.ts"]);

  const output = await Deno.makeTempDir({ prefix: "va_compile_" });
  try {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "compile", "--output", `${output}/vote-aggregator`],
      cwd: ROOT,
      env: { DENORT_BIN: `${output}/no-such-denort`, NO_COLOR: "1" },
    }).output();
    const text = new TextDecoder().decode(stderr);
    assert.equal(code, EXIT_DENORT_UNAVAILABLE, text);
    const last = text.trim().split("\n").at(-1)!;
    assert.match(last, /^compile: no denort runtime for Deno [\d.]+: DENORT_BIN points to .*no-such-denort/);
    assert.doesNotMatch(text, /Stack backtrace/);
  } finally {
    await Deno.remove(output, { recursive: true });
  }
});

Deno.test({
  name: "permissions: deniedEndpoints names each address outside this process's --allow-net",
  permissions: { net: ["127.0.0.1:5432", "0.0.0.0:8001"] },
  fn() {
    const denied = deniedEndpoints(loadConfig({ POSTGRES_HOST: "127.0.0.1", RABBITMQ_HOST: "127.0.0.1" }));
    assert.equal(denied.length, 1);
    assert.match(denied[0], /RabbitMQ at 127\.0\.0\.1:5672 \(RABBITMQ_URL or RABBITMQ_HOST\/RABBITMQ_PORT\)/);
    assert.match(denied[0], /--allow-net/);
    assert.deepEqual(deniedEndpoints(loadConfig({ POSTGRES_HOST: "127.0.0.1", RABBITMQ_HOST: "localhost" })).length, 1);
  },
});

Deno.test("permissions: the service runs under exactly these flags and counts a vote", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const env = serviceEnv(db, queue);
  const flags = await flagsFor(env);
  await using service = await spawnService(env, { permissions: flags });
  await queue.publish([seedVote(1, "LAW-PERM", "oui")]);
  await waitUntil(
    async () => (await results(db.sql))["LAW-PERM"]?.[0] === 1,
    "the vote is in vote_results",
  );
  const metrics = await (await fetch(`${service.url}/metrics`)).text();
  assert.match(metrics, /^votes_aggregated_total\{law_id="LAW-PERM",choice="oui"\} 1$/m);
  const ready = await fetch(`${service.url}/readyz`);
  assert.equal(ready.status, 200, await ready.text());
  // The live results: their listening connection and routes need nothing beyond the set.
  const live = await (await fetch(`${service.url}/results/LAW-PERM`)).json();
  assert.equal(live.oui_count, 1);
  await using stream = await openStream(`${service.url}/results/stream`);
  await waitUntil(() => stream.totals()["LAW-PERM"]?.[0] === 1, "the stream shows the vote");
  assert.equal((await fetch(`${service.url}/`)).status, 200);
  assert.equal(await service.stop("SIGTERM"), 0, service.output());
  assert.doesNotMatch(service.output(), /NotCapable|Requires \w+ access|EPERM/);
  assert.deepEqual(await results(db.sql), { "LAW-PERM": [1, 0] });
});

for (
  const [part, variable] of [
    ["PostgreSQL", "DATABASE_URL"],
    ["RabbitMQ", "RABBITMQ_URL"],
  ] as const
) {
  Deno.test(`permissions: a ${part} host outside the set stops the start at once, naming it`, async () => {
    await using db = await createTestDatabase();
    await using queue = await createTestQueue();
    const env = serviceEnv(db, queue);
    const flags = await flagsFor(env);
    // The same server under another name: only the permission differs.
    const outside = aliasHost(env[variable]);
    const address = `${new URL(outside).hostname}:${new URL(outside).port || (part === "RabbitMQ" ? 5672 : 5432)}`;
    await using service = await spawnService({ ...env, [variable]: outside }, {
      permissions: flags,
      waitHealthy: false,
    });
    const code = await withDeadline(service.exited, PROMPT_FAILURE_MS, `the service refused ${address}`);
    assert.notEqual(code, 0);
    const output = service.output();
    assert.ok(output.includes(address), `the error names ${address}:\n${output}`);
    assert.match(output, /--allow-net/, output);
    assert.match(output, new RegExp(part), output);
  });
}

Deno.test("permissions: an HTTP listen address outside the set stops the start, naming it", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const env = serviceEnv(db, queue);
  const flags = await flagsFor(env);
  const port = String(freePort());
  await using service = await spawnService({ ...env, PROMETHEUS_PORT: port }, {
    permissions: flags,
    waitHealthy: false,
  });
  const code = await withDeadline(service.exited, PROMPT_FAILURE_MS, "the service refused its listen address");
  assert.notEqual(code, 0);
  assert.ok(service.output().includes(`127.0.0.1:${port}`), service.output());
  assert.match(service.output(), /allow-net/);
});

function passThrough(...names: string[]): Record<string, string> {
  return Object.fromEntries(names.flatMap((name) => {
    const value = Deno.env.get(name);
    return value === undefined ? [] : [[name, value]];
  }));
}

/** `deno task start` as an operator runs it, with `env` on top of PATH, HOME and DENO_DIR only. */
function startTask(env: Record<string, string>) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "start"],
    cwd: ROOT,
    env: { ...passThrough("PATH", "HOME", "DENO_DIR"), LOG_LEVEL: "DEBUG", ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { output, exited } = collectOutput(child);
  return {
    child,
    exited,
    output,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await exited;
    },
  };
}

Deno.test("permissions: deno task start runs the service under these flags, passes SIGTERM on and exits 0", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const env = serviceEnv(db, queue);
  await using task = startTask(env);
  const url = `http://127.0.0.1:${env.PROMETHEUS_PORT}`;
  let done = false;
  task.exited.finally(() => done = true);
  await waitUntil(async () => {
    if (done) throw new Error(`deno task start exited early:\n${task.output()}`);
    try {
      const response = await fetch(`${url}/readyz`);
      await response.body?.cancel();
      return response.ok;
    } catch {
      return false;
    }
  }, "deno task start serves /readyz");
  await queue.publish([seedVote(2, "LAW-START", "non")]);
  await waitUntil(async () => (await results(db.sql))["LAW-START"]?.[1] === 1, "the vote is counted");

  task.child.kill("SIGTERM");
  assert.equal(await withDeadline(task.exited, 15_000, "deno task start stops on SIGTERM"), 0, task.output());
  const output = task.output();
  assert.match(output, /Stopping on SIGTERM/, "the service itself received the signal");
  // LOG_LEVEL=DEBUG makes the launcher print the command it ran: the computed flags.
  assert.ok(output.includes(shellQuote(await flagsFor(env))), output);
});

Deno.test("permissions: deno task start passes the service's failure exit code on", async () => {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  // Nothing listens on this port: the service cannot connect and exits 1.
  const closed = new URL(db.url);
  closed.port = String(freePort());
  await using task = startTask({
    ...serviceEnv(db, queue),
    DATABASE_URL: closed.toString(),
    STARTUP_TIMEOUT_SECONDS: "1",
  });
  assert.equal(await withDeadline(task.exited, 20_000, "deno task start fails"), 1, task.output());
  assert.match(task.output(), /Start-up did not finish within 1 s .*cannot connect to PostgreSQL/);
});

Deno.test("permissions: every broker node's host:port is allowed", async () => {
  const env = { RABBITMQ_HOST: "127.0.0.1,mq2:5673,[::1]:5674", POSTGRES_HOST: "127.0.0.1" };
  const net = flag(await flagsFor(env), "--allow-net");
  for (const node of ["127.0.0.1:5672", "mq2:5673", "[::1]:5674"]) assert.ok(net.includes(node), net.join(","));
});

Deno.test({
  name: "permissions: a broker node outside --allow-net is named at start, the others are not",
  permissions: { net: ["127.0.0.1:5432", "0.0.0.0:8001", "127.0.0.1:5672"] },
  fn() {
    const denied = deniedEndpoints(loadConfig({ POSTGRES_HOST: "127.0.0.1", RABBITMQ_HOST: "127.0.0.1,mq2:5673" }));
    assert.equal(denied.length, 1, denied.join("\n"));
    assert.match(denied[0], /RabbitMQ at mq2:5673/);
  },
});

Deno.test("permissions: every host of a multi-host DATABASE_URL or POSTGRES_HOST list is allowed", () => {
  const net = (env: Record<string, string>) => flag(permissionFlags(loadConfig(env)), "--allow-net");
  assert.deepEqual(
    net({ DATABASE_URL: "postgres://u:p@db1:5432,[fd00::2]:5433,db3/votes", RABBITMQ_HOST: "mq" }),
    ["mq:5672", "db1:5432", "[fd00::2]:5433", "db3:5432", "0.0.0.0:8001"],
  );
  assert.deepEqual(
    net({ POSTGRES_HOST: "db1,db2:6000", POSTGRES_PORT: "5433", RABBITMQ_HOST: "mq" }),
    ["mq:5672", "db1:5433", "db2:6000", "0.0.0.0:8001"],
  );
});
