#!/usr/bin/env bash
# Compiles the service (deno task compile) and smoke-tests the binary: /healthz answers, and one
# vote published on a fresh queue is counted in vote_results of a fresh database; SIGTERM exits 0.
#
# deno compile needs denort, Deno's runtime-only binary of the same version: from DENORT_BIN, or
# downloaded from Deno's own host. When neither works this prints why and exits 0 (skipped), as
# the permission set itself is tested through `deno task start` by tests/config/permissions_test.ts.
# Env: DENORT_BIN (optional), TEST_POSTGRES_URL / TEST_RABBITMQ_URL (as for the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[compile-smoke] %s\n' "$*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
version=$(deno --version | awk 'NR==1{print $2}')

# 1. Is there a denort of this version? Compile a probe that prints its runtime's version: a base
#    binary that is not a denort (e.g. the full deno) does not run the embedded program at all.
echo 'console.log(Deno.version.deno);' >"$work/probe.ts"
if ! timeout 180 deno compile --quiet --no-config --output "$work/probe" "$work/probe.ts" >"$work/probe.log" 2>&1; then
  log=$(sed 's/\x1b\[[0-9;]*m//g' "$work/probe.log")
  if grep -q 'Could not find denort' <<<"$log"; then
    reason="DENORT_BIN=${DENORT_BIN:-} does not exist"
  elif url=$(grep -o -m1 'https://[^ )]*denort[^ )]*' <<<"$log"); then
    cause=$(grep -o -m1 -E 'dns error|Connection refused|timed out|certificate[^,]*|status code [0-9]+' <<<"$log" || true)
    reason="DENORT_BIN is unset and $url cannot be downloaded${cause:+ ($cause)}"
  else
    reason=$(grep -m1 'error' <<<"$log" || echo "deno compile failed")
  fi
  say "skipped: no denort $version runtime: $reason"
  exit 0
fi
ran=$(timeout 20 "$work/probe" </dev/null 2>/dev/null | head -1 || true)
if [ "$ran" != "$version" ]; then
  say "skipped: DENORT_BIN=${DENORT_BIN:-unset} is not a denort $version (the probe binary printed '${ran}' instead of running its program)"
  exit 0
fi
say "denort $version available${DENORT_BIN:+ at $DENORT_BIN}"

# 2. and 3. The driver makes the database and queue, compiles with their hosts and a free port in
#    the environment (as a build for that deployment would), and runs the binary.
timeout 300 deno run --allow-all - "$work" <<'EOF'
import assert from "node:assert/strict";
import { createTestDatabase, createTestQueue, RABBITMQ_URL, results, seedVote, waitUntil } from "./tests/helpers.ts";
import { freePort } from "./tests/service_process.ts";

const work = Deno.args[0];
const binary = `${work}/vote-aggregator`;
await using db = await createTestDatabase();
await using queue = await createTestQueue();
const port = freePort();
const env = {
  DATABASE_URL: db.url,
  RABBITMQ_URL,
  RABBITMQ_QUEUE: queue.name,
  HTTP_HOST: "127.0.0.1",
  PROMETHEUS_PORT: String(port),
  POSTGRES_SSLMODE: "disable",
  BATCH_TIMEOUT_SECONDS: "0.05",
};
const build = await new Deno.Command(Deno.execPath(), {
  args: ["task", "--quiet", "compile", "--output", binary],
  env,
  stdout: "inherit",
  stderr: "inherit",
}).output();
assert.equal(build.code, 0, "deno task compile failed");

// Its own directory as working directory: no .env of this checkout is read.
const child = new Deno.Command(binary, {
  env,
  clearEnv: true,
  cwd: work,
  stdin: "null",
  stdout: "piped",
  stderr: "piped",
}).spawn();
let output = "";
const decoder = new TextDecoder();
const drained = Promise.all([child.stdout, child.stderr].map(async (stream) => {
  for await (const chunk of stream) output += decoder.decode(chunk, { stream: true });
}));
let exited = false;
child.status.finally(() => exited = true);
try {
  await waitUntil(async () => {
    if (exited) throw new Error(`the binary exited early:\n${output}`);
    return await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => (r.body?.cancel(), r.ok), () => false);
  }, "/healthz answers", 30_000, 50);
  await queue.publish([seedVote(1, "LAW-BINARY", "oui")]);
  await waitUntil(async () => (await results(db.sql))["LAW-BINARY"]?.[0] === 1, "the vote is counted", 30_000, 50);
  child.kill("SIGTERM");
  const status = await child.status;
  await drained;
  assert.equal(status.code, 0, output);
  console.error("[compile-smoke] ok: /healthz answered and the vote was counted; SIGTERM exited 0");
} finally {
  if (!exited) child.kill("SIGKILL");
}
EOF
