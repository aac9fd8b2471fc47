import assert from "node:assert/strict";
import { DatabaseHosts } from "../../lib/database/hosts.ts";
import { hostPort } from "../../lib/config/url.ts";
import { freePort } from "../support/service.ts";

const host = (port: number) => ({ host: "127.0.0.1", port, address: hostPort("127.0.0.1", port) });

/** Opens one socket through `hosts` as postgres.js does; resolves with the port it went to once it failed or held. */
async function attempt(hosts: DatabaseHosts): Promise<{ port: number; startedAfterMs: number }> {
  const asked = performance.now();
  const socket = await hosts.socket();
  const startedAfterMs = performance.now() - asked;
  const port = (socket as unknown as { port: number }).port;
  await new Promise<void>((resolve) => {
    socket.once("error", () => resolve());
    socket.once("connect", () => resolve());
  });
  socket.destroy();
  await new Promise((resolve) => setTimeout(resolve, 10)); // its close handler runs
  return { port, startedAfterMs };
}

Deno.test("database hosts: the next host at once after a failure, the backoff only after a full round", async () => {
  const [a, b] = [freePort(), freePort()]; // nothing listens: refused
  const hosts = new DatabaseHosts([host(a), host(b)], 5_000, (round) => 200 * round);
  const tries = [];
  for (let i = 0; i < 5; i++) tries.push(await attempt(hosts));
  assert.deepEqual(tries.map((t) => t.port), [a, b, a, b, a]);
  const waited = tries.map((t) => t.startedAfterMs >= 150);
  assert.deepEqual(waited, [false, false, true, false, true], JSON.stringify(tries));
  assert.ok(tries[4].startedAfterMs >= 380, `round 2 waits twice as long: ${tries[4].startedAfterMs} ms`);
});

Deno.test("database hosts: a connection that holds keeps its host and ends the rounds", async () => {
  const refused = freePort();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const up = (listener.addr as Deno.NetAddr).port;
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn);
  })();
  try {
    const hosts = new DatabaseHosts([host(refused), host(up)], 100, () => 10_000);
    assert.equal((await attempt(hosts)).port, refused);
    assert.equal(hosts.current.port, up);
    const socket = await hosts.socket();
    await new Promise((resolve) => socket.once("connect", resolve));
    await new Promise((resolve) => setTimeout(resolve, 200)); // past settleMs: it held
    assert.equal(hosts.delayMs, 0);
    assert.equal(hosts.current.port, up, "the host that works stays the one tried first");
    socket.destroy();
  } finally {
    listener.close();
    await accepting.catch(() => {});
    for (const conn of accepted) conn.close();
  }
});
