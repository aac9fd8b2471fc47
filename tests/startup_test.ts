import assert from "node:assert/strict";
import postgres from "postgres";
import { describeConnectionFailure, isConnectionFailure, openDatabase } from "../lib/startup.ts";
import { AbortedError } from "../lib/retry.ts";
import { TimeoutError } from "../lib/timeout.ts";
import { loadConfig } from "../lib/config/config.ts";
import { TcpProxy } from "./support/proxy.ts";
import { POSTGRES_URL } from "./support/servers.ts";
import { waitUntil } from "./support/wait.ts";

const withCode = (code: string) => Object.assign(new Error(code), { code });

Deno.test("startup: what is retried — a connection refused, reset or timed out; not a refusal nor an untrusted certificate", () => {
  for (const code of ["ECONNREFUSED", "ECONNRESET", "CONNECT_TIMEOUT", "EAI_AGAIN"]) {
    assert.equal(isConnectionFailure(withCode(code)), true, code);
  }
  assert.equal(isConnectionFailure(new TimeoutError("setup")), true);
  for (const code of ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "ERR_TLS_CERT_ALTNAME_INVALID"]) {
    assert.equal(isConnectionFailure(withCode(code)), false, code);
  }
  assert.equal(isConnectionFailure(new Error("no code")), false);
  const refused = Object.assign(Object.create(postgres.PostgresError.prototype), { code: "28P01" });
  assert.equal(isConnectionFailure(refused), false, "a wrong password fails the start at once");
  assert.match(
    describeConnectionFailure(withCode("CONNECT_TIMEOUT"), 500),
    /timed out after 500 ms .*CONNECT_TIMEOUT_SECONDS/,
  );
});

Deno.test("startup: openDatabase against a PostgreSQL that never answers times out each attempt and stops on abort", async () => {
  await using silent = new TcpProxy(Number(new URL(POSTGRES_URL).port || 5432));
  await silent.cut("stall");
  const url = new URL(POSTGRES_URL);
  url.port = String(silent.port);
  const config = loadConfig({
    DATABASE_URL: url.toString(),
    POSTGRES_SSLMODE: "disable",
    CONNECT_TIMEOUT_SECONDS: "0.2",
  });
  const stop = new AbortController();
  const opening = openDatabase(config, stop.signal);
  // Two attempts held by the silent server (0.2 s each, then backoff): it retries.
  await waitUntil(() => silent.open >= 2, "two connection attempts held by the silent server", 10_000);
  const aborted = performance.now();
  stop.abort();
  await assert.rejects(opening, AbortedError);
  assert.ok(performance.now() - aborted < 1000, "abandoned at once");
});
