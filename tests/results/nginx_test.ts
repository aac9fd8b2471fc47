/**
 * The shipped deploy/nginx/results.conf in front of a results-only instance,
 * with Debian's nginx (tests/support/nginx.ts: the file itself, only its
 * upstream, port and paths replaced), beside a counting instance on the real
 * broker and database: while a drain runs, a crowd of viewers polling through
 * nginx causes about one request per second per route to reach the service and
 * sees totals at most ~2 s old; only the public routes pass; a client that
 * never finishes its headers is cut. Skips, saying so, without nginx.
 */
import assert from "node:assert/strict";
import { nginxSkipReason, startNginx } from "../support/nginx.ts";
import { resultsService } from "../support/results.ts";
import { results } from "../support/servers.ts";
import { call, freePort, metric, spawnService } from "../support/service.ts";
import { openStream } from "../support/sse.ts";
import { CommitLog, quantile, startViewers } from "../support/viewers.ts";
import { buildMix } from "../support/votes.ts";
import { waitUntil } from "../support/wait.ts";

const SKIP = nginxSkipReason();
if (SKIP) console.log(`nginx test skipped: ${SKIP}`);

const VIEWERS = 24;
const ROUTES = ["/results", "/results/L01"];
/**
 * The service's Cache-Control (RESULTS_CACHE_SECONDS=1) lets nginx keep an answer 1 s (nginx counts whole
 * seconds: up to 2 s of age in fact) and serve it stale while one request refreshes it: ~2 s, and the
 * refresh's own time.
 */
const MAX_STALENESS_MS = 2500;

/** Sends a request line and part of the headers, never the end; resolves with the ms until nginx closes. */
async function slowHeaders(port: number): Promise<number> {
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  const started = performance.now();
  await connection.write(new TextEncoder().encode("GET /results HTTP/1.1\r\nHost: results.example\r\nX-Slow: "));
  const buffer = new Uint8Array(1024);
  try {
    while ((await connection.read(buffer)) !== null) { /* nginx may answer 408 before closing */ }
  } catch { /* reset */ }
  connection.close();
  return performance.now() - started;
}

Deno.test({
  name: "nginx: the shipped results.conf passes only the public routes and cuts a client that never ends its headers",
  ignore: SKIP !== undefined,
  fn: async () => {
    await using setup = await resultsService("h26_nginx");
    await using proxy = await startNginx({ upstream: new URL(setup.service.url).host });
    const slow = slowHeaders(proxy.port);
    await setup.queue.publish(buildMix({ valid: 20, laws: 2, seed: 41 }).bodies);
    await waitUntil(async () => (await call(setup.service, "/results")).body.laws.length === 2, "counted");

    for (const path of ["/metrics", "/status", "/healthz", "/readyz", "/flush", "/pause", "/resume", "/anything"]) {
      const response = await fetch(`${proxy.url}${path}`);
      await response.body?.cancel();
      assert.equal(response.status, 404, `${path} is not proxied`);
    }
    for (const path of ["/flush", "/pause", "/resume"]) {
      const response = await fetch(`${proxy.url}${path}`, { method: "POST" });
      await response.body?.cancel();
      assert.equal(response.status, 404, `POST ${path} is not proxied`);
    }
    const post = await fetch(`${proxy.url}/results`, { method: "POST" });
    await post.body?.cancel();
    assert.equal(post.status, 403, "only GET and HEAD pass");

    const first = await fetch(`${proxy.url}/results`);
    const body = await first.text();
    assert.equal(first.status, 200);
    assert.equal(JSON.parse(body).laws.length, 2);
    const tag = first.headers.get("etag")!;
    assert.match(tag, /^"[\w-]{22}"$/, "the service's strong tag passes");
    assert.equal(first.headers.get("cache-control"), "public, max-age=1, stale-while-revalidate=1");
    const hit = await fetch(`${proxy.url}/results?bypass=${Math.random()}`);
    await hit.body?.cancel();
    assert.equal(hit.headers.get("x-cache-status"), "HIT", "a query string does not bypass the cache");
    const conditional = await fetch(`${proxy.url}/results`, { headers: { "if-none-match": tag } });
    await conditional.body?.cancel();
    assert.equal(conditional.status, 304, "nginx answers a conditional request from its cache");
    assert.equal((await fetch(`${proxy.url}/`)).status, 200, "the page");
    const cached = await fetch(`${proxy.url}/results/L01`);
    await cached.body?.cancel();
    assert.equal(cached.status, 200);
    await using stream = await openStream(`${proxy.url}/results/stream`);
    await waitUntil(() => Object.keys(stream.totals()).length === 2, "the stream passes, unbuffered");

    const cutAfter = await slow;
    assert.ok(
      cutAfter >= 9_000 && cutAfter < 15_000,
      `cut after ${Math.round(cutAfter)} ms (client_header_timeout 10s)`,
    );
    assert.equal(await setup.service.stop(), 0);
  },
});

Deno.test({
  name: "nginx: while a drain runs, viewers through the cache cause ~1 request/s per route and see totals ≤ ~2 s old",
  ignore: SKIP !== undefined,
  fn: async () => {
    await using setup = await resultsService("h26_nginx");
    const { db, queue, service } = setup;
    await db.sql.unsafe(await Deno.readTextFile(new URL("../../sql/role_results_reader.sql", import.meta.url)));
    const readerUrl = new URL(db.url);
    readerUrl.username = "vote_results_reader";
    await using reader = await spawnService({
      RESULTS_DATABASE_URL: readerUrl.toString(),
      DATABASE_URL: readerUrl.toString(),
      POSTGRES_SSLMODE: "disable",
      PROMETHEUS_PORT: String(freePort()),
    }, { args: ["results"] });
    await using proxy = await startNginx({ upstream: new URL(reader.url).host });
    await using log = await CommitLog.listen(db.url);
    const reached = async () =>
      await Promise.all(["results", "law"].map((route) => metric(reader, "results_requests_total", { route })));
    const before = await reached();

    const viewers = startViewers({ url: proxy.url, count: VIEWERS, paths: ROUTES, intervalMs: 50 });
    const mix = buildMix({ valid: 12_000, laws: 3, seed: 42 });
    for (let i = 0; i < mix.bodies.length; i += 1000) await queue.publish(mix.bodies.slice(i, i + 1000));
    await waitUntil(
      async () => JSON.stringify(await results(db.sql)) === JSON.stringify(mix.expected),
      "the drain ends",
      60_000,
      50,
    );
    // The last totals reach the viewers too.
    await waitUntil(
      async () => {
        const response = await fetch(`${proxy.url}/results`);
        const shown = await response.json();
        return shown.laws.reduce((n: number, l: { total_votes: number }) => n + l.total_votes, 0) === 12_000;
      },
      "nginx serves the final totals",
      5_000,
      100,
    );
    const report = await viewers.stop(log);
    const after = await reached();
    const versions = [...log.committed.values()].reduce((n, v) => n + v.size, 0);

    assert.deepEqual(report.errorSamples, [], "every viewer's request was answered");
    assert.ok(versions >= 30, `the drain committed many versions while viewed (${versions})`);
    assert.ok(report.requests / report.seconds >= 100, `viewers' requests: ${report.requests} in ${report.seconds} s`);
    assert.ok(report.notModified > 0, "conditional requests were answered 304");
    for (const [i, route] of ROUTES.entries()) {
      const count = after[i] - before[i];
      // About one a second: the cache's first fill and the window's edges aside.
      assert.ok(
        count <= report.seconds + 3,
        `${route}: ${count} requests reached the service in ${report.seconds.toFixed(1)} s, ` +
          `for ${report.requests} viewers' requests`,
      );
    }
    const p99 = quantile(report.staleness, 0.99)!;
    const max = report.staleness.at(-1)!;
    assert.ok(max <= MAX_STALENESS_MS, `staleness p99 ${p99.toFixed(0)} ms, max ${max.toFixed(0)} ms`);
    const hits = (await proxy.accessLog()).match(/cache=HIT/g)?.length ?? 0;
    assert.ok(hits > report.requests / 2, `most answers are the cache's (${hits} hits)`);
    assert.equal(await reader.stop(), 0);
    assert.equal(await service.stop(), 0);
  },
});
