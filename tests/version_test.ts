import assert from "node:assert/strict";
import { VERSION } from "../lib/version.ts";
import { createMetrics } from "../lib/metrics/registry.ts";

const ROOT = new URL("../", import.meta.url);

async function run(args: string[]): Promise<{ code: number; stdout: string }> {
  const { code, stdout } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT.pathname,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stderr: "null",
  }).output();
  return { code, stdout: new TextDecoder().decode(stdout) };
}

Deno.test("version: deno.json's version is semantic and CHANGELOG.md has its entry", async () => {
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  assert.equal(VERSION, denoJson.version);
  assert.match(VERSION, /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
  const changelog = await Deno.readTextFile(new URL("CHANGELOG.md", ROOT));
  assert.match(changelog, new RegExp(`^## \\[${VERSION.replaceAll(".", "\\.")}\\] - \\d{4}-\\d{2}-\\d{2}$`, "m"));
});

Deno.test("version: `vote-aggregator --version` and `deno task start -- --version` print it and exit 0", async () => {
  for (
    const args of [["run", "--allow-env", "--allow-read=.env", "main.ts", "--version"], [
      "task",
      "start",
      "--",
      "--version",
    ]]
  ) {
    const { code, stdout } = await run(args);
    assert.deepEqual([code, stdout.trim()], [0, `vote-aggregator ${VERSION}`], args.join(" "));
  }
});

Deno.test("version: the vote_aggregator_build_info gauge carries it", async () => {
  const text = await createMetrics(false).registry.metrics();
  assert.ok(text.includes(`vote_aggregator_build_info{version="${VERSION}"} 1`), text.slice(0, 400));
});
