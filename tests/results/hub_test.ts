import assert from "node:assert/strict";
import { HubFullError, ResultsHub } from "../../lib/results/hub.ts";
import type { LawResult } from "../../lib/results/store.ts";

const law = (id: string, oui: number, non: number, version: number): LawResult => ({
  law_id: id,
  oui_count: oui,
  non_count: non,
  total_votes: oui + non,
  version,
  updated_at: "2026-11-22T10:00:00.000Z",
});

const decode = (bytes: Uint8Array | undefined) => {
  if (bytes === undefined) return undefined;
  const text = new TextDecoder().decode(bytes);
  const event = text.match(/^event: (.+)$/m)?.[1];
  const id = text.match(/^id: (.+)$/m)?.[1];
  const data = text.match(/^data: (.+)$/m)?.[1];
  return { event, id, laws: data ? (JSON.parse(data).laws as LawResult[]) : undefined, text };
};

Deno.test("hub: a snapshot first, then only newer versions, coalesced per client to the latest totals", () => {
  const hub = new ResultsHub({ maxClients: 10, heartbeatMs: 60_000 });
  try {
    hub.publish([law("A", 1, 0, 1), law("B", 0, 1, 1)]);
    const client = hub.connect(null);
    const snapshot = decode(hub.next(client))!;
    assert.equal(snapshot.event, "snapshot");
    assert.deepEqual(snapshot.laws!.map((l) => l.law_id), ["A", "B"]);
    assert.match(snapshot.text, /^retry: \d+$/m);
    assert.equal(hub.next(client), undefined, "up to date: nothing to send");

    assert.deepEqual(hub.publish([law("A", 1, 0, 1)]), [], "a version already held is not a change");
    // Three changes while the client does not read: it is sent one event, each law at its latest.
    hub.publish([law("A", 2, 0, 2)]);
    hub.publish([law("A", 3, 0, 3), law("B", 0, 2, 2)]);
    hub.publish([law("A", 2, 0, 2)]); // late and older: ignored
    const totals = decode(hub.next(client))!;
    assert.equal(totals.event, "totals");
    assert.deepEqual(totals.laws, [law("A", 3, 0, 3), law("B", 0, 2, 2)]);
    assert.equal(hub.next(client), undefined);
    // A client that was up to date gets exactly the last change.
    hub.publish([law("B", 0, 3, 3)]);
    assert.deepEqual(decode(hub.next(client))!.laws, [law("B", 0, 3, 3)]);
  } finally {
    hub.close();
  }
});

Deno.test("hub: Last-Event-ID of this hub resumes with what was missed; any other gets a snapshot", () => {
  const hub = new ResultsHub({ maxClients: 10, heartbeatMs: 60_000 });
  try {
    hub.publish([law("A", 1, 0, 1), law("B", 1, 0, 1)]);
    const first = hub.connect(null);
    const { id } = decode(hub.next(first))!;
    hub.disconnect(first);
    hub.publish([law("B", 2, 0, 2)]);
    const resumed = hub.connect(id!);
    const missed = decode(hub.next(resumed))!;
    assert.equal(missed.event, "totals");
    assert.deepEqual(missed.laws, [law("B", 2, 0, 2)], "only the law that changed since the id");
    for (const other of ["00000000.1", `${id!.split(".")[0]}.999`, "garbage", ""]) {
      assert.equal(decode(hub.next(hub.connect(other)))!.event, "snapshot", `Last-Event-ID ${other}`);
    }
  } finally {
    hub.close();
  }
});

Deno.test("hub: the client cap, and no client after close", () => {
  const hub = new ResultsHub({ maxClients: 2, heartbeatMs: 60_000 });
  const a = hub.connect(null);
  hub.connect(null);
  assert.throws(() => hub.connect(null), HubFullError);
  hub.disconnect(a);
  hub.connect(null);
  hub.close();
  assert.throws(() => hub.connect(null), HubFullError);
});

Deno.test("hub: heartbeats wake an idle client", async () => {
  const hub = new ResultsHub({ maxClients: 2, heartbeatMs: 20 });
  try {
    const client = hub.connect(null);
    hub.next(client);
    await client.changed();
    assert.equal(decode(hub.next(client))!.text, ": heartbeat\n\n");
  } finally {
    hub.close();
  }
});
