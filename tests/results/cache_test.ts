/**
 * Caching of the results and the page against the real service, broker and
 * database: strong ETags that two instances agree on for the same totals and
 * that change with them, 304 to `If-None-Match`, `Cache-Control` from
 * `RESULTS_CACHE_SECONDS`, and nothing stored under `RESULTS_TOKEN`.
 */
import assert from "node:assert/strict";
import { cacheControl, notModified } from "../../lib/results/cache.ts";
import { resultsService } from "../support/results.ts";
import { results } from "../support/servers.ts";
import { buildMix } from "../support/votes.ts";
import { waitUntil } from "../support/wait.ts";

async function get(url: string, headers: Record<string, string> = {}, method = "GET") {
  const response = await fetch(url, { headers, method });
  const body = await response.text();
  return { status: response.status, headers: response.headers, body };
}

Deno.test("results cache: Cache-Control by RESULTS_CACHE_SECONDS and RESULTS_TOKEN; If-None-Match's forms", () => {
  assert.equal(cacheControl({ cacheSeconds: 1, token: undefined }), "public, max-age=1, stale-while-revalidate=1");
  assert.equal(cacheControl({ cacheSeconds: 5, token: undefined }), "public, max-age=5, stale-while-revalidate=5");
  assert.equal(cacheControl({ cacheSeconds: 0, token: undefined }), "public, no-cache");
  assert.equal(cacheControl({ cacheSeconds: 5, token: "a-token-of-sixteen-chars" }), "private, no-store");
  const request = (value: string) => new Request("http://x/results", { headers: { "if-none-match": value } });
  assert.ok(notModified(request('"a", "b"'), '"b"'));
  assert.ok(notModified(request('W/"b"'), '"b"'), "weak comparison");
  assert.ok(notModified(request("*"), '"b"'));
  assert.ok(!notModified(request('"bb"'), '"b"'));
  assert.ok(!notModified(new Request("http://x/results"), '"b"'));
});

Deno.test("results cache: ETags and 304s; two instances give the same tag for the same totals", async () => {
  await using setup = await resultsService("h26_cache", { RESULTS_CACHE_SECONDS: "2" });
  const { db, queue, service } = setup;
  await using other = await setup.spawn({ RESULTS_CACHE_SECONDS: "2" });

  const mix = buildMix({ valid: 300, laws: 3, seed: 26 });
  await queue.publish(mix.bodies);
  await waitUntil(async () => JSON.stringify(await results(db.sql)) === JSON.stringify(mix.expected), "counted");

  const first = await get(`${service.url}/results`);
  assert.equal(first.status, 200);
  const tag = first.headers.get("etag")!;
  assert.match(tag, /^"[\w-]{22}"$/, "a strong tag");
  assert.equal(first.headers.get("cache-control"), "public, max-age=2, stale-while-revalidate=2");
  const body = JSON.parse(first.body);
  assert.equal(body.laws.length, 3);
  assert.equal(body.at, body.laws.map((l: { updated_at: string }) => l.updated_at).sort().at(-1), "at: latest change");

  // Once the totals settle, both instances read the same table: the same bytes, the same tag.
  const elsewhere = await get(`${other.url}/results`);
  assert.equal(elsewhere.headers.get("etag"), tag, "the same tag on another instance");
  assert.equal(elsewhere.body, first.body, "the same body on another instance");
  const again = await get(`${service.url}/results`);
  assert.equal(again.headers.get("etag"), tag, "the same tag later, with the same totals");

  for (const condition of [tag, `W/${tag}`, `"x", ${tag}`]) {
    const revalidated = await get(`${other.url}/results`, { "if-none-match": condition });
    assert.equal(revalidated.status, 304, condition);
    assert.equal(revalidated.body, "", "no body");
    assert.equal(revalidated.headers.get("etag"), tag);
    assert.equal(revalidated.headers.get("cache-control"), "public, max-age=2, stale-while-revalidate=2");
  }
  assert.equal((await get(`${service.url}/results`, { "if-none-match": '"another"' })).status, 200);
  const head = await get(`${service.url}/results`, {}, "HEAD");
  assert.equal(head.headers.get("etag"), tag, "HEAD carries the tag");

  const law = await get(`${service.url}/results/L01`);
  const lawTag = law.headers.get("etag")!;
  assert.equal(law.status, 200);
  assert.notEqual(lawTag, tag);
  assert.equal((await get(`${other.url}/results/L01`)).headers.get("etag"), lawTag);
  assert.equal((await get(`${other.url}/results/L01`, { "if-none-match": lawTag })).status, 304);
  const missing = await get(`${service.url}/results/L99`);
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.get("cache-control"), "public, max-age=2, stale-while-revalidate=2");

  // New totals: a new tag, and the old one is answered with the new body.
  await queue.publish(buildMix({ valid: 50, laws: 3, seed: 27, voterBase: 50_000 }).bodies);
  await waitUntil(async () => (await get(`${service.url}/results`)).headers.get("etag") !== tag, "a new tag");
  const changed = await get(`${other.url}/results`, { "if-none-match": tag });
  assert.equal(changed.status, 200, "a tag of older totals is not a match");
  assert.equal(changed.headers.get("etag"), (await get(`${service.url}/results`)).headers.get("etag"));

  const page = await get(`${service.url}/`);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("cache-control"), "public, max-age=2, stale-while-revalidate=2");
  assert.match(page.body, /<body data-mode="stream">/);
  const pageTag = page.headers.get("etag")!;
  assert.equal((await get(`${other.url}/`)).headers.get("etag"), pageTag, "the page's tag on another instance");
  const page304 = await get(`${service.url}/`, { "if-none-match": pageTag });
  assert.equal(page304.status, 304);
  assert.ok(page304.headers.get("content-security-policy"), "a 304 keeps the page's headers");
  const stream = await fetch(`${service.url}/results/stream`);
  assert.equal(stream.headers.get("cache-control"), "no-cache, no-transform", "the stream is never cached");
  await stream.body?.cancel();
  assert.equal(await other.stop(), 0);
  assert.equal(await service.stop(), 0);
});

Deno.test("results cache: under RESULTS_TOKEN nothing is stored; RESULTS_PAGE_MODE=poll marks the page", async () => {
  const token = "cache-test-results-token-0123456789";
  await using setup = await resultsService("h26_cache", { RESULTS_TOKEN: token, RESULTS_PAGE_MODE: "poll" });
  const { queue, service } = setup;
  await queue.publish(buildMix({ valid: 20, laws: 1, seed: 28 }).bodies);
  const auth = { authorization: `Bearer ${token}` };
  await waitUntil(
    async () => JSON.parse((await get(`${service.url}/results`, auth)).body).laws.length === 1,
    "one law",
  );
  const answer = await get(`${service.url}/results`, auth);
  assert.equal(answer.headers.get("cache-control"), "private, no-store");
  const tag = answer.headers.get("etag")!;
  const revalidated = await get(`${service.url}/results`, { ...auth, "if-none-match": tag });
  assert.equal(revalidated.status, 304, "the viewer's own conditional requests still get 304");
  assert.equal(revalidated.headers.get("cache-control"), "private, no-store");
  const refused = await get(`${service.url}/results`, { "if-none-match": tag });
  assert.equal(refused.status, 401, "a tag is no token");
  const page = await get(`${service.url}/?token=${token}`);
  assert.equal(page.headers.get("cache-control"), "private, no-store");
  assert.match(page.body, /<body data-mode="poll">/);
  assert.equal(await service.stop(), 0);
});
