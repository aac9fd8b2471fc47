/**
 * The notification contract between the counting statement and the listener,
 * on the real database: sent on commit only, the changed laws and their new
 * versions, chunked under PostgreSQL's 8,000-byte limit; and reading results.
 */
import assert from "node:assert/strict";
import { migrate } from "../../lib/database/migrations.ts";
import {
  NOTIFY_CHUNK_LAWS,
  parseNotification,
  readLaw,
  readResults,
  RESULTS_CHANNEL,
} from "../../lib/results/store.ts";
import { countVotes } from "../../lib/database/sql/count_votes.ts";
import { createTestDatabase, testPool } from "../support/servers.ts";
import { lawVote as vote } from "../support/results.ts";
import { waitUntil } from "../support/wait.ts";

Deno.test("store: a commit notifies its laws and versions, in chunks under 8000 bytes; a rollback notifies nothing", async () => {
  await using db = await createTestDatabase();
  const sql = testPool(db.url, 2);
  try {
    await migrate(sql);
    const payloads: string[] = [];
    await db.sql.listen(RESULTS_CHANNEL, (payload) => payloads.push(payload));
    // Laws with the longest ids, and characters JSON must escape: the worst payloads.
    const laws = Array.from({ length: 2 * NOTIFY_CHUNK_LAWS + 5 }, (_, i) => `${i}`.padEnd(44, '"\\\u0001') + "-law-");
    await countVotes(sql, laws.map((law, i) => vote(i, law, "oui")), { batchAgeMs: 1, instance: "test" });
    await waitUntil(() => payloads.length === 3, "three notifications", 5000);
    const changed = payloads.flatMap((p) => parseNotification(p)!);
    assert.deepEqual(
      changed.map((c) => c.lawId).sort(),
      [...laws].sort(),
      "every changed law, once",
    );
    assert.ok(changed.every((c) => c.version === 1), "a new law's first version is 1");
    for (const payload of payloads) {
      assert.ok(new TextEncoder().encode(payload).length < 8000, `payload of ${payload.length} characters`);
    }

    // A second commit bumps only the laws it changes.
    payloads.length = 0;
    await countVotes(sql, [vote(1000, laws[0], "non"), vote(1001, laws[1], "oui")], { batchAgeMs: 1, instance: "t" });
    await waitUntil(() => payloads.length === 1, "one notification", 5000);
    assert.deepEqual(parseNotification(payloads[0]), [laws[0], laws[1]].sort().map((lawId) => ({ lawId, version: 2 })));
    assert.equal((await readLaw(sql, laws[0]))?.version, 2);
    assert.equal((await readLaw(sql, laws[0]))?.total_votes, 2);

    // Counted, then rolled back: no notification (NOTIFY is delivered on commit), no version.
    payloads.length = 0;
    await sql.begin(async (tx) => {
      await countVotes(tx as unknown as typeof sql, [vote(2000, laws[2], "oui")], { batchAgeMs: 1, instance: "t" });
      throw new Error("roll back");
    }).catch(() => {});
    // A later commit's notification arrives after the rolled-back one would have.
    await countVotes(sql, [vote(3000, laws[3], "oui")], { batchAgeMs: 1, instance: "t" });
    await waitUntil(() => payloads.length >= 1, "the later commit's notification", 5000);
    assert.deepEqual(payloads.flatMap((p) => parseNotification(p)!), [{ lawId: laws[3], version: 2 }]);
    assert.equal((await readLaw(sql, laws[2]))?.version, 1);

    // A redelivered batch counts nothing, changes no version and notifies nothing.
    payloads.length = 0;
    await countVotes(sql, [vote(3000, laws[3], "oui")], { batchAgeMs: 1, instance: "t" });
    await countVotes(sql, [vote(4000, laws[4], "oui")], { batchAgeMs: 1, instance: "t" });
    await waitUntil(() => payloads.length >= 1, "the next notification", 5000);
    assert.deepEqual(payloads.flatMap((p) => parseNotification(p)!), [{ lawId: laws[4], version: 2 }]);

    const all = await readResults(sql);
    assert.equal(all.length, laws.length);
    assert.deepEqual((await readResults(sql, [laws[3], "nope"])).map((r) => r.law_id), [laws[3]]);
    assert.equal(await readLaw(sql, "x".repeat(51)), undefined);
  } finally {
    await sql.end({ timeout: 1 });
  }
});

Deno.test("store: notification payloads are law and version pairs; anything else is refused", () => {
  assert.deepEqual(parseNotification('[["L\\"1",3],["L2",4]]'), [{ lawId: 'L"1', version: 3 }, {
    lawId: "L2",
    version: 4,
  }]);
  for (const bad of ["", "{}", "[1]", '[["L1"]]', '[["L1","3"]]', "not json"]) {
    assert.equal(parseNotification(bad), undefined, bad);
  }
});
