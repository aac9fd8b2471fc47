/**
 * The results hub: the latest committed totals of every law, and the stream
 * clients they fan out to. It owns the clients, their event ids, the
 * heartbeat, the cap on clients and their end at shutdown; it reads nothing
 * (the listener publishes into it, {@link ./listener.ts}) and serves nothing
 * (HTTP is {@link ./routes.ts}'s).
 *
 * Every change the hub accepts gets the next sequence number; an event's id is
 * `<epoch>.<seq>` (`epoch` is random per process), and a client is "at" the
 * sequence of the last event it was sent. A client's buffer is therefore not a
 * queue but a position: what it has not been sent is every law changed after
 * it, with the latest totals, computed when its stream asks for more. A slow
 * client costs the same few bytes however far behind it is, and it never
 * slows a publish. A client that reconnects with `Last-Event-ID` of this epoch
 * starts at that position (it gets what it missed, as one `totals` event);
 * any other starts with a `snapshot`. Usage: lib/results/live.ts, routes.ts.
 *
 * Wakes are coalesced (`eventIntervalMs`, `RESULTS_EVENT_INTERVAL_MS`): a
 * change after a quiet interval wakes the clients at once (leading edge); the
 * changes that follow within the interval are held and wake them together at
 * its end (trailing edge), so an up-to-date client gets at most one event per
 * interval however often batches commit: each event is one write per client,
 * and it is the writes, not the encoding, that cost the service (docs/performance.md). Nothing is lost: the events are absolute totals, and the held
 * change is sent at the trailing edge, or at once by {@link ResultsHub.close}.
 *
 * @module
 */

import type { StreamEventType } from "../metrics/labels.ts";
import { StreamClient } from "./client.ts";
import type { LawResult } from "./store.ts";

export { StreamClient };

/** Options of {@link ResultsHub}. */
export interface HubOptions {
  /** Stream clients at once; one more is refused. */
  maxClients: number;
  /** A comment line this often, so proxies keep the stream open and clients see it is alive. */
  heartbeatMs: number;
  /** Shortest time between two wakes (changes within it are sent together at its end); 0: each at once. @default 0 */
  eventIntervalMs?: number;
}

interface LawState {
  result: LawResult;
  /** Sequence number of the change that set it. */
  seq: number;
}

const encoder = new TextEncoder();
const HEARTBEAT = encoder.encode(": heartbeat\n\n");

/** The client cap is reached, or the hub is closed: answer 503 with `Retry-After`. */
export class HubFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HubFullError";
  }
}

/** Latest totals per law, and the clients to tell. */
export class ResultsHub {
  readonly epoch: string = crypto.randomUUID().slice(0, 8);
  /** Events handed to clients since start, by type (`results_stream_events_total`). */
  readonly sent: Record<StreamEventType, number> = { snapshot: 0, totals: 0, heartbeat: 0 };
  #laws = new Map<string, LawState>();
  #seq = 0;
  #clients = new Set<StreamClient>();
  #closed = false;
  #emptied: PromiseWithResolvers<void> | undefined;
  /** The last change, encoded once for every client that was up to date before it. */
  #last: { from: number; seq: number; bytes: Uint8Array } | undefined;
  /** Sequence at the last wake: what clients are sent (changes after it wait for the next wake). */
  #wokenAt = 0;
  /** Set for `eventIntervalMs` after each wake: changes meanwhile wait for it (the trailing edge). */
  #interval: ReturnType<typeof setTimeout> | undefined;
  #timer: ReturnType<typeof setInterval>;
  readonly #options: HubOptions;
  readonly #eventIntervalMs: number;

  constructor(options: HubOptions) {
    this.#options = options;
    this.#eventIntervalMs = options.eventIntervalMs ?? 0;
    this.#timer = setInterval(() => {
      for (const client of this.#clients) {
        client.heartbeatDue = true;
        client.wake();
      }
    }, options.heartbeatMs);
  }

  /** Clients connected now. */
  get clients(): number {
    return this.#clients.size;
  }

  /** The latest version of `lawId` the hub holds (0 when none). */
  version(lawId: string): number {
    return this.#laws.get(lawId)?.result.version ?? 0;
  }

  /** Every law's latest totals, in law id order. */
  snapshot(): LawResult[] {
    return [...this.#laws.values()].map((s) => s.result).sort((a, b) => a.law_id < b.law_id ? -1 : 1);
  }

  /**
   * Takes the laws whose version is newer than the hub's, as one change, and wakes every client: at once
   * after a quiet interval, else at the interval's end.
   *
   * @returns the laws accepted
   */
  publish(results: readonly LawResult[]): LawResult[] {
    const newer = results.filter((r) => r.version > this.version(r.law_id));
    if (newer.length === 0 || this.#closed) return [];
    const seq = ++this.#seq;
    for (const result of newer) this.#laws.set(result.law_id, { result, seq });
    if (this.#interval === undefined) this.#wakeNow();
    return newer;
  }

  /** True while a change waits for the trailing edge of the interval. */
  get pending(): boolean {
    return this.#seq !== this.#wokenAt;
  }

  /** Wakes every client, then holds further changes for one interval (none when it is 0). */
  #wakeNow(): void {
    this.#wakeAll();
    if (this.#eventIntervalMs === 0) return;
    this.#interval = setTimeout(() => {
      this.#interval = undefined;
      // Changes came in the interval: send them, and hold the next ones for another interval.
      if (this.pending) this.#wakeNow();
    }, this.#eventIntervalMs);
  }

  /** Encodes the changes since the last wake once, for every client that was up to date then, and wakes all. */
  #wakeAll(): void {
    if (this.#seq === this.#wokenAt) return;
    const from = this.#wokenAt;
    this.#wokenAt = this.#seq;
    this.#last = { from, seq: this.#seq, bytes: this.#event("totals", this.#seq, this.#changedSince(from)) };
    for (const client of this.#clients) client.wake();
  }

  #changedSince(seq: number): LawResult[] {
    return [...this.#laws.values()].filter((s) => s.seq > seq).map((s) => s.result)
      .sort((a, b) => a.law_id < b.law_id ? -1 : 1);
  }

  /**
   * A new stream client, resuming after `lastEventId` when it is one of this hub's.
   *
   * @throws {HubFullError} at the cap, or once closed
   */
  connect(lastEventId: string | null): StreamClient {
    if (this.#closed) throw new HubFullError("the results stream is shutting down");
    if (this.#clients.size >= this.#options.maxClients) {
      throw new HubFullError(`the results stream has its maximum of ${this.#options.maxClients} clients`);
    }
    const client = new StreamClient(this.#resumePoint(lastEventId));
    this.#clients.add(client);
    return client;
  }

  /** Forgets a client (its stream ended or was cancelled). */
  disconnect(client: StreamClient): void {
    client.closed = true;
    client.wake();
    this.#clients.delete(client);
    if (this.#clients.size === 0) this.#emptied?.resolve();
  }

  /** Resolves once no client is connected. */
  emptied(): Promise<void> {
    if (this.#clients.size === 0) return Promise.resolve();
    return (this.#emptied ??= Promise.withResolvers()).promise;
  }

  /**
   * What to send `client` next: its snapshot, the laws changed since its last event, or a heartbeat;
   * undefined when it is up to date (its next {@link StreamClient.wake} says when to ask again).
   */
  next(client: StreamClient): Uint8Array | undefined {
    if (client.at === undefined) {
      client.at = this.#seq;
      client.heartbeatDue = false;
      this.sent.snapshot++;
      return this.#event("snapshot", this.#seq, this.snapshot(), "retry: 2000\n");
    }
    if (client.at < this.#wokenAt) {
      const last = this.#last;
      const from = client.at;
      client.at = this.#seq;
      client.heartbeatDue = false;
      this.sent.totals++;
      if (last && last.from === from && last.seq === this.#seq) return last.bytes;
      return this.#event("totals", this.#seq, this.#changedSince(from));
    }
    if (client.heartbeatDue) {
      client.heartbeatDue = false;
      this.sent.heartbeat++;
      return HEARTBEAT;
    }
    return undefined;
  }

  /** Refuses new clients and ends every stream (each sends what it has not yet, the held change too, then ends). */
  close(): void {
    clearTimeout(this.#interval);
    this.#interval = undefined;
    this.#wakeAll();
    this.#closed = true;
    clearInterval(this.#timer);
    for (const client of [...this.#clients]) {
      client.closed = true;
      client.wake();
    }
  }

  /** Ends the streams still open after {@link close} (clients that do not read): their responses end. */
  abortAll(): void {
    for (const client of [...this.#clients]) {
      client.abort?.();
      this.disconnect(client);
    }
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  #resumePoint(lastEventId: string | null): number | undefined {
    const match = lastEventId?.match(/^([0-9a-f]{8})\.(\d{1,15})$/);
    if (!match || match[1] !== this.epoch) return undefined;
    const seq = Number(match[2]);
    return seq <= this.#seq ? seq : undefined;
  }

  #event(name: string, seq: number, laws: LawResult[], prefix = ""): Uint8Array {
    const data = JSON.stringify({ at: new Date().toISOString(), laws });
    return encoder.encode(`${prefix}event: ${name}\nid: ${this.epoch}.${seq}\ndata: ${data}\n\n`);
  }
}
