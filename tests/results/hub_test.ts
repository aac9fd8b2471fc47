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
    const woken = Promise.withResolvers<void>();
    client.onwake = () => woken.resolve();
    await woken.promise;
    assert.equal(decode(hub.next(client))!.text, ": heartbeat\n\n");
  } finally {
    hub.close();
  }
});

/** Events a client is sent from now on, as its stream would take them: each wake, whatever it is due. */
function collect(hub: ResultsHub, client: ReturnType<ResultsHub["connect"]>) {
  const events: { at: number; event: ReturnType<typeof decode> }[] = [];
  let arrived = Promise.withResolvers<void>();
  client.onwake = () => {
    for (let bytes = hub.next(client); bytes; bytes = hub.next(client)) {
      events.push({ at: performance.now(), event: decode(bytes) });
    }
    arrived.resolve();
    arrived = Promise.withResolvers();
  };
  return { events, next: () => arrived.promise };
}

Deno.test("hub: with an event interval, a change after a quiet interval is sent at once, the next ones together at its end", async () => {
  const hub = new ResultsHub({ maxClients: 10, heartbeatMs: 60_000, eventIntervalMs: 150 });
  try {
    const client = hub.connect(null);
    assert.equal(decode(hub.next(client))!.event, "snapshot");
    const { events, next } = collect(hub, client);
    hub.publish([law("A", 1, 0, 1)]);
    assert.equal(events.length, 1, "leading edge: sent at once");
    assert.deepEqual(events[0].event!.laws, [law("A", 1, 0, 1)]);

    // Within the interval: held, then sent as one event with the latest totals of each law.
    hub.publish([law("A", 2, 0, 2)]);
    hub.publish([law("B", 0, 1, 1)]);
    hub.publish([law("A", 3, 0, 3)]);
    assert.equal(events.length, 1, "held within the interval");
    assert.equal(hub.next(client), undefined, "a held change is not sent before the interval's end");
    await next();
    assert.equal(events.length, 2);
    assert.deepEqual(events[1].event!.laws, [law("A", 3, 0, 3), law("B", 0, 1, 1)]);
    const waited = events[1].at - events[0].at;
    assert.ok(waited >= 140 && waited < 1000, `the trailing edge came ${waited.toFixed(0)} ms after the leading one`);

    // A change in the interval the trailing edge opened waits for that interval's end too.
    hub.publish([law("B", 0, 2, 2)]);
    assert.equal(events.length, 2);
    await next();
    assert.deepEqual(events[2].event!.laws, [law("B", 0, 2, 2)]);
    assert.ok(events[2].at - events[1].at >= 140, "at most one event per interval");
    assert.equal(events[2].event!.id, `${hub.epoch}.5`, "the id of the last change");

    // Quiet for an interval (time passing: nothing to await), a change is sent at once again.
    await new Promise((resolve) => setTimeout(resolve, 250));
    assert.ok(!hub.pending);
    hub.publish([law("A", 4, 0, 4)]);
    assert.equal(events.length, 4);
    assert.deepEqual(events[3].event!.laws, [law("A", 4, 0, 4)]);
  } finally {
    hub.close();
  }
});

Deno.test("hub: close sends the held change before the streams end", () => {
  const hub = new ResultsHub({ maxClients: 10, heartbeatMs: 60_000, eventIntervalMs: 60_000 });
  const client = hub.connect(null);
  hub.next(client);
  const { events } = collect(hub, client);
  hub.publish([law("A", 1, 0, 1)]);
  hub.publish([law("A", 2, 0, 2), law("B", 1, 0, 1)]);
  assert.equal(events.length, 1, "the second change is held for a minute");
  assert.ok(hub.pending);
  hub.close();
  assert.equal(events.length, 2, "sent at close");
  assert.deepEqual(events[1].event!.laws, [law("A", 2, 0, 2), law("B", 1, 0, 1)]);
  assert.equal(client.closed, true);
  assert.equal(hub.pending, false);
  assert.deepEqual(hub.publish([law("A", 3, 0, 3)]), [], "nothing is taken once closed");
});

Deno.test("hub: with no interval every change wakes at once, one encoding shared by the clients at one position", () => {
  const hub = new ResultsHub({ maxClients: 10, heartbeatMs: 60_000, eventIntervalMs: 0 });
  try {
    const clients = [hub.connect(null), hub.connect(null)];
    for (const client of clients) hub.next(client);
    const sent = clients.map((client) => collect(hub, client).events);
    hub.publish([law("A", 1, 0, 1)]);
    hub.publish([law("A", 2, 0, 2)]);
    for (const events of sent) assert.deepEqual(events.map((e) => e.event!.laws![0].version), [1, 2]);
    assert.equal(sent[0][1].event!.text, sent[1][1].event!.text);
    assert.deepEqual(hub.sent, { snapshot: 2, totals: 4, heartbeat: 0 }, "events counted for the metrics");
  } finally {
    hub.close();
  }
});
