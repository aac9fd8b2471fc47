/**
 * The results routes against the real service, broker and database: the API
 * and the stream equal `vote_results`, resume with Last-Event-ID, the client
 * cap, RESULTS_TOKEN, CORS and law ids as data.
 */
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { resultsService, untilTotals } from "../support/results.ts";
import { results } from "../support/servers.ts";
import { admin, ADMIN_TOKEN, call } from "../support/service.ts";
import { openStream, type SseClient } from "../support/sse.ts";
import { addResults, buildMix, seedVote } from "../support/votes.ts";
import { waitForEvent, waitUntil } from "../support/wait.ts";

/** `vote_results` with versions, as the API shows them. */
async function table(sql: Parameters<typeof results>[0]) {
  const rows = await sql<{ law_id: string; oui_count: string; non_count: string; version: string }[]>`
    select law_id, oui_count, non_count, version from vote_results order by law_id`;
  return rows.map((r) => ({
    law_id: r.law_id,
    oui_count: Number(r.oui_count),
    non_count: Number(r.non_count),
    version: Number(r.version),
  }));
}

Deno.test("results: the API and the stream equal vote_results; the stream is a snapshot then each change", async () => {
  await using setup = await resultsService("h14_results");
  const { db, queue, service } = setup;
  const empty = await call(service, "/results");
  assert.equal(empty.status, 200);
  assert.deepEqual(empty.body.laws, [], "no law before any vote");

  await using stream = await openStream(`${service.url}/results/stream`);
  assert.equal(stream.response.headers.get("cache-control"), "no-cache, no-transform");
  const first = buildMix({ valid: 600, laws: 4, duplicates: 20, copies: 20, malformed: 5, seed: 3 });
  await queue.publish(first.bodies);
  await untilTotals(stream, first.expected);
  // More votes, in small publishes: several commits, each a totals event.
  const second = buildMix({ valid: 900, laws: 6, seed: 4, voterBase: 10_000 });
  for (let i = 0; i < second.bodies.length; i += 100) await queue.publish(second.bodies.slice(i, i + 100));
  const expected = addResults(first.expected, second.expected);
  await untilTotals(stream, expected);
  assert.deepEqual(await results(db.sql), expected, "the database holds the mixes' totals");

  const [snapshot, ...rest] = stream.events;
  assert.equal(snapshot.event, "snapshot");
  assert.deepEqual(JSON.parse(snapshot.data).laws, [], "the snapshot of an empty table");
  assert.ok(rest.length >= 5, `a totals event per commit (${rest.length})`);
  assert.ok(rest.every((e) => e.event === "totals" && /^[0-9a-f]{8}\.\d+$/.test(e.id ?? "")), "every event has an id");
  const ids = stream.events.map((e) => Number(e.id!.split(".")[1]));
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b), "ids increase");
  for (const [law, versions] of stream.versions) {
    assert.deepEqual(versions, [...new Set(versions)].sort((a, b) => a - b), `${law}: versions only go up`);
  }

  const rows = await table(db.sql);
  const api = await call(service, "/results");
  assert.deepEqual(
    api.body.laws.map((l: { law_id: string; oui_count: number; non_count: number; version: number }) => ({
      law_id: l.law_id,
      oui_count: l.oui_count,
      non_count: l.non_count,
      version: l.version,
    })),
    rows,
    "GET /results equals vote_results, versions included",
  );
  assert.ok(!Number.isNaN(Date.parse(api.body.at)), "the snapshot's time");
  for (const law of api.body.laws) {
    assert.deepEqual(Object.keys(law).sort(), [
      "law_id",
      "non_count",
      "oui_count",
      "total_votes",
      "updated_at",
      "version",
    ]);
    assert.equal(law.total_votes, law.oui_count + law.non_count);
    assert.deepEqual(stream.laws.get(law.law_id)?.version, law.version, `the stream ends on ${law.law_id}'s version`);
  }
  const one = await call(service, "/results/L01");
  assert.equal(one.status, 200);
  assert.equal(one.body.law_id, "L01");
  assert.deepEqual([one.body.oui_count, one.body.non_count], expected.L01);
  assert.doesNotMatch(JSON.stringify(api.body) + JSON.stringify(stream.events), /[0-9a-f]{64}/, "no vote hash");
  assert.equal(await service.stop(), 0);
});

Deno.test("results: law ids are data (escaped, bounded); unknown laws are 404; methods", async () => {
  await using setup = await resultsService("h14_results");
  const { queue, service } = setup;
  const odd = `L/é "<b>" 1%`;
  await queue.publish([seedVote(1, odd, "oui"), seedVote(2, odd, "non"), seedVote(3, "L1", "oui")]);
  await waitUntil(async () => (await call(service, "/results")).body.laws.length === 2, "two laws counted");
  const found = await call(service, `/results/${encodeURIComponent(odd)}`);
  assert.equal(found.status, 200);
  assert.deepEqual([found.body.law_id, found.body.oui_count, found.body.non_count], [odd, 1, 1]);
  for (const path of ["/results/L2", `/results/${"x".repeat(51)}`, `/results/${"x".repeat(5000)}`, "/results/"]) {
    const { status, body } = await call(service, path);
    assert.equal(status, 404, path);
    assert.doesNotMatch(JSON.stringify(body), /xxxx/, "the id is not echoed");
  }
  assert.equal((await call(service, "/results/%E0%A4%A")).status, 400, "bad percent-encoding");
  const post = await call(service, "/results", { method: "POST" });
  assert.equal(post.status, 405);
  assert.equal((await call(service, "/status")).status, 200, "the control plane's routes are unchanged");
  assert.equal(await service.stop(), 0);
});

Deno.test("results: Last-Event-ID resumes with what was missed; another instance's id gets a snapshot", async () => {
  await using setup = await resultsService("h14_results");
  const { db, queue, service } = setup;
  const first = buildMix({ valid: 200, laws: 4, seed: 5 });
  await queue.publish(first.bodies);
  let lastId: string;
  let before: Record<string, [number, number]>;
  {
    await using stream = await openStream(`${service.url}/results/stream`);
    await untilTotals(stream, first.expected);
    lastId = stream.events.at(-1)!.id!;
    before = stream.totals();
  }
  // Only L00 and L01 change while it is away.
  const second = buildMix({ valid: 100, laws: 2, seed: 6, voterBase: 5000 });
  await queue.publish(second.bodies);
  const now = addResults(first.expected, second.expected);
  await waitUntil(async () => isDeepStrictEqual(await results(db.sql), now), "the second mix counted");

  await using resumed = await openStream(`${service.url}/results/stream`, { "last-event-id": lastId });
  await waitForEvent(resumed.changed, "event", () => resumed.events.length >= 1);
  await waitForEvent(resumed.changed, "event", () => isDeepStrictEqual({ ...before, ...resumed.totals() }, now));
  assert.equal(resumed.events[0].event, "totals", "a resumed stream starts with what it missed, not a snapshot");
  assert.ok(!resumed.laws.has("L02") && !resumed.laws.has("L03"), "only the laws that changed meanwhile");

  await using foreign = await openStream(`${service.url}/results/stream`, { "last-event-id": "0badcafe.3" });
  await waitForEvent(foreign.changed, "event", () => foreign.events.length >= 1);
  assert.equal(foreign.events[0].event, "snapshot");
  assert.deepEqual(foreign.totals(), now);
  assert.equal(await service.stop(), 0);
});

Deno.test("results: RESULTS_TOKEN guards the results and the page (not the admin routes), CORS, the client cap", async () => {
  const token = "results-embargo-token-0123456789";
  await using setup = await resultsService("h14_results", {
    RESULTS_TOKEN: token,
    RESULTS_MAX_CLIENTS: "2",
    RESULTS_CORS_ORIGINS: "https://news.example, http://localhost:3000",
  });
  const { queue, service } = setup;
  await queue.publish([seedVote(1, "L1", "oui")]);
  const bearer = { authorization: `Bearer ${token}` };
  await waitUntil(
    async () => (await call(service, "/results", { headers: bearer })).body.laws?.length === 1,
    "counted",
  );

  for (const path of ["/", "/results", "/results/L1", "/results/stream"]) {
    const none = await call(service, path);
    assert.equal(none.status, 401, `${path} without the token`);
    const wrong = await call(service, path, { headers: { authorization: `Bearer ${token}x` } });
    assert.equal(wrong.status, 401, `${path} with a wrong token`);
    const adminToken = await call(service, path, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(adminToken.status, 401, `${path}: ADMIN_TOKEN is not the results token`);
  }
  assert.equal((await call(service, "/results/L1", { headers: bearer })).status, 200);
  assert.equal((await call(service, `/results?token=${token}`)).status, 200, "?token=");
  assert.equal((await call(service, "/flush", { method: "POST", headers: bearer })).status, 401, "not an admin token");
  assert.equal((await admin(service, "/flush")).status, 200, "the admin token still works");

  const page = await fetch(`${service.url}/?token=${token}`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<title>Live results<\/title>/);
  const cookie = page.headers.get("set-cookie")!;
  assert.match(cookie, /^results_token=.+; Path=\/; HttpOnly; SameSite=Strict$/);
  const cookieHeader = { cookie: cookie.split(";")[0] };
  assert.equal((await call(service, "/results", { headers: cookieHeader })).status, 200, "the page's cookie");

  // CORS: listed origins only, results routes only.
  const allowed = await fetch(`${service.url}/results`, { headers: { ...bearer, origin: "https://news.example" } });
  await allowed.body?.cancel();
  assert.equal(allowed.headers.get("access-control-allow-origin"), "https://news.example");
  const other = await fetch(`${service.url}/results`, { headers: { ...bearer, origin: "https://evil.example" } });
  await other.body?.cancel();
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  const preflight = await fetch(`${service.url}/results/stream`, {
    method: "OPTIONS",
    headers: { origin: "http://localhost:3000", "access-control-request-method": "GET" },
  });
  await preflight.body?.cancel();
  assert.equal(preflight.status, 204);
  assert.match(preflight.headers.get("access-control-allow-headers")!, /authorization/);
  const metrics = await fetch(`${service.url}/metrics`, { headers: { origin: "https://news.example" } });
  await metrics.body?.cancel();
  assert.equal(metrics.headers.get("access-control-allow-origin"), null, "no CORS on the control plane");

  // The cap: two streams, the third is refused with Retry-After; a closed one frees its place.
  const a = await openStream(`${service.url}/results/stream`, cookieHeader);
  await using b = await openStream(`${service.url}/results/stream`, bearer);
  const refused = await fetch(`${service.url}/results/stream`, { headers: bearer });
  await refused.body?.cancel();
  assert.equal(refused.status, 503);
  assert.ok(Number(refused.headers.get("retry-after")) > 0, "Retry-After");
  await waitForEvent(b.changed, "event", () => b.events.length > 0);
  await a.close();
  let c: SseClient | undefined;
  await waitUntil(
    async () => {
      c = await openStream(`${service.url}/results/stream`, bearer).catch(() => undefined);
      return c !== undefined;
    },
    "a stream is admitted once another closed",
    10_000,
    100,
  );
  await waitForEvent(c!.changed, "event", () => c!.events.length > 0);
  assert.deepEqual(c!.totals(), { L1: [1, 0] });
  await c!.close();
  assert.equal(await service.stop(), 0);
});

Deno.test("results: RESULTS_ENABLED=false turns the results routes and page off; counting goes on", async () => {
  await using setup = await resultsService("h26_results", { RESULTS_ENABLED: "false" });
  const { db, queue, service } = setup;
  await queue.publish([seedVote(1, "L1", "oui"), seedVote(2, "L1", "non")]);
  await waitUntil(async () => (await results(db.sql)).L1?.join() === "1,1", "the votes are counted");
  for (const path of ["/", "/results", "/results/L1", "/results/stream"]) {
    assert.equal((await call(service, path)).status, 404, path);
  }
  assert.equal((await call(service, "/status")).status, 200);
  assert.equal(await service.stop(), 0);
});
