import assert from "node:assert/strict";
import { loadConfig } from "../../lib/config/config.ts";
import { permissionFlags } from "../../tools/permissions.ts";
import { createTestQueue, RABBITMQ_URL } from "../support/servers.ts";
import { runTool } from "../support/tool.ts";
import { countedDatabase } from "./support.ts";

/** `main.ts` run with `flags` (Deno's) and `args`, in an environment of PATH, HOME and `env` only. */
async function runMain(flags: string[], env: Record<string, string>, ...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...flags, "main.ts", ...args],
    cwd: new URL("../..", import.meta.url).pathname,
    env: { PATH: Deno.env.get("PATH") ?? "", HOME: Deno.env.get("HOME") ?? "", NO_COLOR: "1", ...env },
    clearEnv: true,
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr).trim() };
}

Deno.test("verify CLI: the table, exit 0; a tampered total exits 1 naming the law; bad flags exit 2", async () => {
  await using db = await countedDatabase(3, 10);
  const env = { DATABASE_URL: db.url, RABBITMQ_URL, POSTGRES_SSLMODE: "disable" };
  const ok = await runTool("verify.ts", [], env);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^law\s+stored\s+recounted\s+difference$/m);
  assert.match(ok.stdout, /^L1\s+\d+ oui \/ \d+ non\s+\d+ oui \/ \d+ non\s+0$/m);
  assert.match(ok.stdout, /^OK: /m);
  assert.match(ok.stderr, /replaying the ledger: 30\/30 rows/, "progress as lines when stderr is not a terminal");

  await db.sql`update vote_results set non_count = non_count + 2 where law_id = 'L3'`;
  const bad = await runTool("verify.ts", ["--quiet"], env);
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /^L3\s+.*\s0 oui, \+2 non$/m);
  assert.match(bad.stdout, /DIFFERENCES: 1 finding\(s\); laws L3/);
  assert.match(bad.stdout, /results_differ \(law "L3"\)/);
  const json = JSON.parse((await runTool("verify.ts", ["--json", "--quiet"], env)).stdout);
  assert.deepEqual(json.findings.map((f: { kind: string; law_id: string }) => [f.kind, f.law_id]), [[
    "results_differ",
    "L3",
  ]]);
  const digest = await runTool("verify.ts", ["--digest", "--quiet"], env);
  assert.equal(digest.code, 1);
  assert.equal(digest.stdout, "", "no digest for a database that does not verify");

  for (const args of [["--nope"], ["--expect", "xyz"], ["extra"]]) {
    const run = await runTool("verify.ts", args, env);
    assert.equal(run.code, 2, args.join(" "));
    assert.match(run.stderr, /^verify: .*\nUsage: verify /);
  }
  const down = await runTool("verify.ts", ["--quiet"], {
    ...env,
    DATABASE_URL: db.url.replace(db.name, "va_no_such_db"),
  });
  assert.equal(down.code, 3);
  assert.match(down.stderr, /^verify: cannot verify: /);
});

Deno.test("vote-aggregator verify and dead-letters run under the binary's permission set", async () => {
  await using db = await countedDatabase(2, 5);
  await using queue = await createTestQueue();
  const env = { DATABASE_URL: db.url, RABBITMQ_URL, RABBITMQ_QUEUE: queue.name, POSTGRES_SSLMODE: "disable" };
  // The flags `deno task compile` bakes in (plus --no-prompt: a test must fail, not wait).
  const flags = [...permissionFlags(loadConfig(env), { forCompile: true }), "--no-prompt"];
  const run = (...args: string[]) => runMain(flags, env, ...args);
  const verified = await run("verify", "--json", "--quiet");
  assert.equal(verified.code, 0, verified.stderr);
  assert.equal(JSON.parse(verified.stdout).ledger.batches, 2);
  const summary = await run("dead-letters", "summary", "--json");
  assert.equal(summary.code, 0, summary.stderr);
  assert.equal(JSON.parse(summary.stdout).total, 0);
  const bad = await run("dead-letters", "nope");
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^vote-aggregator dead-letters: the first argument is one of summary/);
});

Deno.test("verify and dead-letters: a bad variable, or their server outside --allow-net, exits 2 with one line naming it", async () => {
  const run = (net: string, env: Record<string, string>, ...args: string[]) =>
    runMain(["--no-prompt", `--allow-net=${net}`, "--allow-env", "--allow-read=.env"], env, ...args);
  const env = { POSTGRES_HOST: "127.0.0.1", RABBITMQ_HOST: "127.0.0.1" };
  for (
    const [args, server, variables] of [
      [["verify"], "PostgreSQL at 127.0.0.1:5432", "DATABASE_URL or POSTGRES_HOST/POSTGRES_PORT"],
      [["dead-letters", "summary"], "RabbitMQ at 127.0.0.1:5672", "RABBITMQ_URL or RABBITMQ_HOST/RABBITMQ_PORT"],
    ] as const
  ) {
    const program = `vote-aggregator ${args[0]}`;
    const denied = await run("127.0.0.1:1", env, ...args);
    assert.equal(denied.code, 2, denied.stderr);
    assert.equal(denied.stderr.split("\n").length, 1, denied.stderr);
    assert.ok(
      denied.stderr.startsWith(`${program}: not permitted to connect to ${server} (${variables})`),
      denied.stderr,
    );
    const bad = await run("127.0.0.1", { ...env, POSTGRES_PORT: "x" }, ...args);
    assert.equal(bad.code, 2, bad.stderr);
    assert.equal(bad.stderr.split("\n").length, 1, bad.stderr);
    assert.match(bad.stderr, new RegExp(`^${program}: .*POSTGRES_PORT`));
  }
});
