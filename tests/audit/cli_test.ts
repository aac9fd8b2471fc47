import assert from "node:assert/strict";
import { RABBITMQ_URL } from "../support/servers.ts";
import { runTool } from "../support/tool.ts";
import { countedDatabase } from "./support.ts";

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
  assert.match(bad.stdout, /^L3\s+.*  0 oui, \+2 non$/m);
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
