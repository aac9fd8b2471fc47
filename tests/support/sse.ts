/**
 * A Server-Sent Events client for tests and the benchmark: reads a
 * `text/event-stream` response as it comes, parses its events (`event:`,
 * `id:`, `data:`, comments) and keeps, per law, the totals with the highest
 * version, as the results page does. `changed` fires on every event, for
 * `waitForEvent`.
 *
 * @module
 */

import type { LawResult } from "../../lib/results/store.ts";

/** One event of the stream. */
export interface StreamEvent {
  event: string;
  id: string | undefined;
  data: string;
  /** `performance.now()` when it was parsed. */
  receivedAt: number;
}

/** A law's totals as the results stream sends them: the service's own {@link LawResult}. */
export type StreamLaw = LawResult;

/** An open stream. */
export interface SseClient extends AsyncDisposable {
  response: Response;
  events: StreamEvent[];
  /** Heartbeat comments received. */
  comments: number;
  /** Latest totals per law (highest version wins). */
  laws: Map<string, StreamLaw>;
  /** Versions seen per law, in arrival order (to check they only go up). */
  versions: Map<string, number[]>;
  /** Fires `event` at each event or comment, and `end` when the stream ends. */
  changed: EventTarget;
  /** True once the server ended the stream. */
  readonly ended: boolean;
  /** `{law: [oui, non]}`, as tests/support/servers.ts `results()` gives the table. */
  totals(): Record<string, [number, number]>;
  close(): Promise<void>;
}

/**
 * Opens `url` as an event stream.
 *
 * @throws when the answer is not 200 `text/event-stream` (the response is in `cause`)
 */
export async function openStream(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
  const abort = new AbortController();
  const response = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: abort.signal });
  if (response.status !== 200 || !response.headers.get("content-type")?.startsWith("text/event-stream")) {
    await response.body?.cancel();
    throw new Error(`${url} answered ${response.status} ${response.headers.get("content-type")}`, {
      cause: response,
    });
  }
  const changed = new EventTarget();
  let ended = false;
  const client: SseClient = {
    response,
    events: [],
    comments: 0,
    laws: new Map(),
    versions: new Map(),
    changed,
    get ended() {
      return ended;
    },
    totals: () =>
      Object.fromEntries(
        [...client.laws.values()].sort((a, b) => a.law_id < b.law_id ? -1 : 1).map((
          l,
        ) => [l.law_id, [l.oui_count, l.non_count]]),
      ),
    async close() {
      abort.abort();
      await reading.catch(() => {});
    },
    async [Symbol.asyncDispose]() {
      await client.close();
    },
  };

  const dispatch = (block: string) => {
    const fields: Record<string, string> = {};
    let comment = false;
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) comment = true;
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      const key = line.slice(0, colon);
      const value = line.slice(colon + 1).replace(/^ /, "");
      fields[key] = key === "data" && fields.data !== undefined ? `${fields.data}\n${value}` : value;
    }
    if (fields.data === undefined) {
      if (comment) client.comments++;
    } else {
      const event = {
        event: fields.event ?? "message",
        id: fields.id,
        data: fields.data,
        receivedAt: performance.now(),
      };
      client.events.push(event);
      if (event.event === "snapshot" || event.event === "totals") {
        for (const law of JSON.parse(event.data).laws as StreamLaw[]) {
          const list = client.versions.get(law.law_id) ?? [];
          list.push(law.version);
          client.versions.set(law.law_id, list);
          if ((client.laws.get(law.law_id)?.version ?? -1) < law.version) client.laws.set(law.law_id, law);
        }
      }
    }
    changed.dispatchEvent(new Event("event"));
  };

  const reading = (async () => {
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for await (const chunk of response.body!) {
        buffer += decoder.decode(chunk, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } finally {
      ended = true;
      changed.dispatchEvent(new Event("event"));
      changed.dispatchEvent(new Event("end"));
    }
  })();
  reading.catch(() => {});
  return client;
}

/** Stream clients held by a python3 child: connected, and either never reading or reading and discarding. */
export interface StreamCrowd extends AsyncDisposable {
  /** How many are connected (each sent its request). */
  count: number;
  close(): Promise<void>;
}

/**
 * Opens `count` streams on `url` from a python3 child, outside this process (so that holding them costs
 * this process nothing). `reading: false`: they never read, each socket with `SO_RCVBUF` 4 KiB set before
 * connecting (Deno cannot shrink a receive buffer: with the kernel's autotuning a loopback client absorbs
 * tens of MB unread, and the server would never see backpressure). `reading: true`: they read and discard.
 */
export async function streamCrowd(url: string, count: number, reading: boolean): Promise<StreamCrowd> {
  const { hostname, port, pathname } = new URL(url);
  const script = `
import selectors, socket, sys, threading
conns = []
for _ in range(${count}):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if not ${reading ? "True" : "False"}:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((${JSON.stringify(hostname)}, ${Number(port)}))
    s.sendall(b"GET ${pathname} HTTP/1.1\\r\\nHost: ${hostname}\\r\\n\\r\\n")
    conns.append(s)
def drain():
    sel = selectors.DefaultSelector()
    for s in conns:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            try:
                if not key.fileobj.recv(65536):
                    sel.unregister(key.fileobj)
            except OSError:
                sel.unregister(key.fileobj)
if ${reading ? "True" : "False"}:
    threading.Thread(target=drain, daemon=True).start()
print("connected", flush=True)
sys.stdin.read()
`;
  const child = new Deno.Command("python3", {
    args: ["-c", script],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  })
    .spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  if (!new TextDecoder().decode(value).includes("connected")) throw new Error("python3 clients did not connect");
  reader.releaseLock();
  const close = async () => {
    await child.stdin.close().catch(() => {});
    await child.status;
    await child.stdout.cancel().catch(() => {});
  };
  return { count, close, [Symbol.asyncDispose]: close };
}
