/**
 * Tools for the fault suite (`faults_test.ts`): a TCP proxy that a test can
 * cut and restore, the broker's own view of queues and connections
 * (`rabbitmqctl`), the service's control plane and memory, deadlines, and
 * mixes of votes whose exact outcome is known in advance.
 *
 * Everything here talks to the real servers on this machine; nothing is mocked.
 *
 * @module
 */

import amqp from "amqplib";
import type { ChannelModel, ConfirmChannel, GetMessage } from "amqplib";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type postgres from "postgres";
import { declareTopology, REJECT_REASON_HEADER } from "../lib/consumer.ts";
import { RABBITMQ_URL, results, seedVote, sha256, uniqueName, workerVote } from "./helpers.ts";
import type { ServiceProcess } from "./service_process.ts";

/** Real restarts of RabbitMQ and PostgreSQL disturb everyone on the machine: only with `FAULT_RESTARTS=1`. */
export const FAULT_RESTARTS = Deno.env.get("FAULT_RESTARTS") === "1";

/** Bearer token of the services the suite starts (`ADMIN_TOKEN`). */
export const ADMIN_TOKEN = "fault-suite-admin-token-0123456789";

// ---------------------------------------------------------------------------
// Deadlines and waits

/** A time budget for one test case: every wait in the case is bounded by what is left of it. */
export class Deadline {
  readonly #start = Date.now();
  readonly #end: number;
  readonly #label: string;
  /** What the case did and waited for, with times: appended to a failure, printed with FAULT_TRACE=1. */
  readonly trace: string[] = [];

  constructor(label: string, ms: number) {
    this.#label = label;
    this.#end = this.#start + ms;
  }

  /** Notes a step in the {@link trace}. */
  step(what: string): void {
    this.trace.push(`[${((Date.now() - this.#start) / 1000).toFixed(1)} s] ${what}`);
  }

  /** Milliseconds left. */
  remaining(): number {
    return Math.max(0, this.#end - Date.now());
  }

  /**
   * Polls `predicate` until it holds, for states no event announces (queue
   * depths, row counts, a child's /status). Rejects after `timeoutMs` or when
   * the case's budget runs out, with what `describe` says about the last state.
   */
  async until(
    predicate: () => boolean | Promise<boolean>,
    what: string,
    options: { timeoutMs?: number; intervalMs?: number; describe?: () => string } = {},
  ): Promise<void> {
    const limit = Math.min(options.timeoutMs ?? Infinity, this.remaining());
    const end = Date.now() + limit;
    for (;;) {
      let error: unknown;
      try {
        if (await predicate()) {
          this.step(`${what} (waited ${Date.now() - (end - limit)} ms)`);
          return;
        }
      } catch (e) {
        // A failed assertion or a missing permission will not heal: fail now, not at the deadline.
        if (e instanceof assert.AssertionError || e instanceof Deno.errors.NotCapable) throw e;
        error = e; // e.g. a service still starting: try again until the deadline
      }
      if (Date.now() >= end) {
        const last = options.describe?.() ?? "";
        throw new Error(
          `[${this.#label}] timed out after ${Math.round(limit)} ms waiting until ${what}` +
            (last ? `; last seen: ${last}` : "") + (error ? `; last error: ${(error as Error).message}` : ""),
        );
      }
      await delay(options.intervalMs ?? 50);
    }
  }
}

/** A pause of `ms`; only for spacing polls and for the random moments of the crash test, never to wait for an event. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs `fn`; on failure, appends the case's trace and the tail of each service's output to the error. */
export async function withOutputOnFailure<T>(
  deadline: Deadline,
  services: () => ServiceProcess[],
  fn: () => Promise<T>,
): Promise<T> {
  try {
    const result = await fn();
    const trace = Deno.env.get("FAULT_TRACE");
    if (trace) console.log(deadline.trace.map((line) => `    ${line}`).join("\n"));
    if (trace === "output") { for (const s of services()) console.log(s.output()); }
    return result;
  } catch (error) {
    const outputs = services().map((s, i) => `--- service ${i} (pid ${s.pid}) ---\n${s.output().slice(-6000)}`);
    (error as Error).message += `\n--- trace ---\n${deadline.trace.join("\n")}\n${outputs.join("\n")}`;
    throw error;
  }
}

// ---------------------------------------------------------------------------
// A TCP proxy the test can cut

/** How a {@link TcpProxy} makes its target unreachable. */
export type CutMode =
  /** Connections refused (the port is closed): the database or broker host is up, the server is not. */
  | "refuse"
  /** Nothing answers: open connections stop moving data and new ones are accepted and never served (a partition). */
  | "stall";

/**
 * Forwards TCP connections from an ephemeral port on 127.0.0.1 to a target.
 * `cut()` makes the target unreachable for whoever uses the proxy, and for
 * nobody else; `restore()` forwards again.
 */
export class TcpProxy implements AsyncDisposable {
  #listener: Deno.TcpListener;
  readonly #port: number;
  readonly #target: Deno.ConnectOptions;
  readonly #pairs = new Set<Pair>();
  #accepting: Promise<void>;
  #mode: CutMode | undefined;
  #disposed = false;
  #stalled: PromiseWithResolvers<void> = Promise.withResolvers();

  constructor(targetPort: number, targetHost = "127.0.0.1") {
    this.#target = { hostname: targetHost, port: targetPort };
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept(this.#listener);
  }

  /** The port to connect to instead of the target's. */
  get port(): number {
    return this.#port;
  }

  /** Connections being forwarded now. */
  get open(): number {
    return this.#pairs.size;
  }

  /** Makes the target unreachable (see {@link CutMode}) until {@link restore}. */
  async cut(mode: CutMode = "refuse"): Promise<void> {
    if (this.#mode !== undefined) this.restore();
    this.#mode = mode;
    if (mode === "stall") return; // pumps wait on #stalled before each write
    if (mode === "refuse") {
      this.#listener.close();
      await this.#accepting;
    }
    await this.#dropAll();
  }

  /** Forwards again (stalled data flows on: nothing was lost, as after a partition heals). */
  restore(): void {
    const mode = this.#mode;
    this.#mode = undefined;
    if (mode === "refuse") {
      this.#listener = Deno.listen({ hostname: "127.0.0.1", port: this.#port });
      this.#accepting = this.#accept(this.#listener);
    }
    if (mode === "stall") {
      this.#stalled.resolve();
      this.#stalled = Promise.withResolvers();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#mode === "stall") this.restore();
    this.#disposed = true;
    try {
      this.#listener.close();
    } catch { /* closed */ }
    await this.#accepting;
    await this.#dropAll();
  }

  async #dropAll(): Promise<void> {
    const pairs = [...this.#pairs];
    for (const pair of pairs) closeQuietly(pair.client, pair.upstream);
    await Promise.all(pairs.map((p) => p.done));
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    for (;;) {
      let client: Deno.TcpConn;
      try {
        client = await listener.accept();
      } catch {
        return; // listener closed
      }
      if (this.#disposed) {
        closeQuietly(client);
        continue;
      }
      const pair: Pair = { client, done: Promise.resolve() };
      pair.done = this.#forward(pair).finally(() => this.#pairs.delete(pair));
      this.#pairs.add(pair);
    }
  }

  async #forward(pair: Pair): Promise<void> {
    while (this.#mode === "stall") await this.#stalled.promise;
    try {
      pair.upstream = await Deno.connect(this.#target);
    } catch {
      closeQuietly(pair.client);
      return;
    }
    const gate = () => this.#mode === "stall" ? this.#stalled.promise : undefined;
    await Promise.all([pump(pair.client, pair.upstream, gate), pump(pair.upstream, pair.client, gate)]);
  }
}

interface Pair {
  client: Deno.TcpConn;
  upstream?: Deno.TcpConn;
  done: Promise<void>;
}

async function pump(from: Deno.TcpConn, to: Deno.TcpConn, gate: () => Promise<void> | undefined): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      for (let wait = gate(); wait; wait = gate()) await wait; // stalled: hold the data until restored
      for (let written = 0; written < n;) written += await to.write(buffer.subarray(written, n));
    }
  } catch { /* closed by the other side or by cut() */ }
  closeQuietly(from, to);
}

function closeQuietly(...conns: (Deno.Conn | undefined)[]): void {
  for (const conn of conns) {
    try {
      conn?.close();
    } catch { /* already closed */ }
  }
}

/** `url` with its port replaced (to go through a {@link TcpProxy}). */
export function viaPort(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.port = String(port);
  return parsed.toString();
}

// ---------------------------------------------------------------------------
// The broker's view (rabbitmqctl and a short-lived AMQP connection)

/** Runs `rabbitmqctl` with `args`; rejects with its stderr on failure. */
export async function rabbitmqctl(...args: string[]): Promise<string> {
  const out = await new Deno.Command("rabbitmqctl", { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`rabbitmqctl ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** What the broker says about one queue. */
export interface QueueInfo {
  name: string;
  type: string;
  /** Messages ready and delivered-but-unacknowledged, from one look at the queue (`rabbitmqctl list_queues`). */
  ready: number;
  unacked: number;
  /** Ready messages and consumers from a passive declare, right now. */
  readyNow: number;
  consumers: number;
  arguments: Record<string, unknown>;
}

/**
 * The broker's counts for `name`; undefined when it does not exist.
 * `ready`/`unacked` are one consistent look at a classic queue; a quorum
 * queue's come from statistics a few seconds old. `readyNow` and `consumers`
 * are exact for both (passive declare).
 */
export async function queueInfo(name: string): Promise<QueueInfo | undefined> {
  const rows = JSON.parse(
    await rabbitmqctl(
      "list_queues",
      "-q",
      "--formatter",
      "json",
      "name",
      "type",
      "messages_ready",
      "messages_unacknowledged",
      "arguments",
    ),
  ) as {
    name: string;
    type: string;
    messages_ready: number;
    messages_unacknowledged: number;
    arguments: [string, string, unknown][];
  }[];
  const row = rows.find((r) => r.name === name);
  if (!row) return undefined;
  const check = await withChannel((channel) => channel.checkQueue(name)).catch(() => undefined);
  if (check === undefined) return undefined;
  return {
    name: row.name,
    type: row.type,
    ready: row.messages_ready,
    unacked: row.messages_unacknowledged,
    readyNow: check.messageCount,
    consumers: check.consumerCount,
    arguments: Object.fromEntries((row.arguments ?? []).map(([key, , value]) => [key, value])),
  };
}

/**
 * Local ports of the established TCP connections that process `pid` has open
 * to `remotePort`, from `ss` (reading another process's /proc entries would
 * need --allow-all; the suite runs under `deno task test`'s permissions).
 */
export async function tcpLocalPorts(pid: number, remotePort: number): Promise<number[]> {
  const out = await new Deno.Command("ss", {
    args: ["-Htnp", "state", "established", `( dport = :${remotePort} )`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`ss failed: ${new TextDecoder().decode(out.stderr)}`);
  const ports: number[] = [];
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    // Recv-Q Send-Q Local:Port Peer:Port users:(("deno",pid=123,fd=20))
    const cols = line.trim().split(/\s+/);
    if (cols.length >= 5 && line.includes(`pid=${pid},`)) {
      ports.push(Number(cols[2].slice(cols[2].lastIndexOf(":") + 1)));
    }
  }
  return ports;
}

/** Rows of a `rabbitmqctl list_*` command as tab-separated text (its JSON output cannot be fed back to close_connection). */
async function listRows(command: string, ...columns: string[]): Promise<string[][]> {
  const text = await rabbitmqctl(command, "-q", "--no-table-headers", ...columns);
  return text.split("\n").filter((line) => line.trim() !== "").map((line) => line.split("\t"));
}

/** The broker's ids (`pid` column) of the AMQP connections that OS process `pid` holds. */
export async function brokerConnectionsOf(pid: number, brokerPort = 5672): Promise<string[]> {
  const ports = new Set(await tcpLocalPorts(pid, brokerPort));
  if (ports.size === 0) return [];
  const rows = await listRows("list_connections", "pid", "peer_port");
  return rows.filter(([, port]) => ports.has(Number(port))).map(([id]) => id);
}

/** The broker's id of the one AMQP connection of process `pid`. */
export async function brokerConnectionOf(pid: number): Promise<string> {
  const connections = await brokerConnectionsOf(pid);
  assert.equal(connections.length, 1, `process ${pid} should hold one broker connection: ${connections}`);
  return connections[0];
}

/** Closes an AMQP connection from the broker's side (`rabbitmqctl close_connection`). */
export async function closeBrokerConnection(id: string): Promise<void> {
  await rabbitmqctl("close_connection", id, "fault suite: closed by the server");
}

/** The channels of process `pid` on the broker, with their prefetch and unacknowledged counts. */
export async function brokerChannelsOf(
  pid: number,
): Promise<{ connection: string; prefetch_count: number; messages_unacknowledged: number }[]> {
  const connections = new Set(await brokerConnectionsOf(pid));
  const rows = await listRows("list_channels", "connection", "prefetch_count", "messages_unacknowledged");
  return rows.filter(([connection]) => connections.has(connection)).map(([connection, prefetch, unacked]) => ({
    connection,
    prefetch_count: Number(prefetch),
    messages_unacknowledged: Number(unacked),
  }));
}

/** Opens a short-lived AMQP connection for `fn` (one that tolerates the broker going away). */
export async function withChannel<T>(fn: (channel: ConfirmChannel, model: ChannelModel) => Promise<T>): Promise<T> {
  const model = await amqp.connect(RABBITMQ_URL);
  model.on("error", () => {});
  const channel = await model.createConfirmChannel();
  channel.on("error", () => {});
  try {
    return await fn(channel, model);
  } finally {
    await model.close().catch(() => {});
  }
}

/**
 * A vote queue for one test, named uniquely, with helpers that each use their
 * own short-lived connection (so they survive a broker restart). Deleted,
 * with its dead-letter exchange and queue, at dispose.
 */
export interface FaultQueue extends AsyncDisposable {
  name: string;
  dlq: string;
  dlx: string;
  /** Declares the service's own topology (`declareTopology`), so messages can be preloaded before it starts. */
  declare(options?: { quorum?: boolean; deliveryLimit?: number }): Promise<void>;
  /** Publishes persistent messages, confirmed by the broker. */
  publish(bodies: string[]): Promise<void>;
  /** Takes every message from the dead-letter queue. */
  takeDeadLetters(): Promise<GetMessage[]>;
  /** The broker's counts (see {@link queueInfo}); throws when the queue does not exist. */
  info(): Promise<QueueInfo>;
}

/** Creates a {@link FaultQueue}; declares nothing unless told to. */
export function faultQueue(prefix = "votes_fault"): FaultQueue {
  const name = uniqueName(prefix);
  const dlq = `${name}.dlq`;
  const dlx = `${name}.dlx`;
  return {
    name,
    dlq,
    dlx,
    declare: (options = {}) =>
      withChannel((channel) =>
        declareTopology(channel, {
          queue: name,
          queueType: options.quorum ? "quorum" : "classic",
          deliveryLimit: options.deliveryLimit ?? 20,
        })
      ),
    publish: (bodies) =>
      withChannel(async (channel) => {
        for (let i = 0; i < bodies.length; i++) {
          const ok = channel.sendToQueue(name, Buffer.from(bodies[i]), {
            persistent: true,
            contentType: "application/json",
          });
          if (!ok) await new Promise((resolve) => channel.once("drain", resolve));
          if (i % 5000 === 4999) await channel.waitForConfirms();
        }
        await channel.waitForConfirms();
      }),
    takeDeadLetters: () =>
      withChannel(async (channel) => {
        const messages: GetMessage[] = [];
        for (;;) {
          const message = await channel.get(dlq, { noAck: true });
          if (message === false) return messages;
          messages.push(message);
        }
      }),
    async info() {
      const info = await queueInfo(name);
      if (!info) throw new Error(`queue ${name} does not exist`);
      return info;
    },
    async [Symbol.asyncDispose]() {
      await withChannel(async (channel) => {
        await channel.deleteQueue(name).catch(() => {});
        await channel.deleteQueue(dlq).catch(() => {});
        await channel.deleteExchange(dlx).catch(() => {});
      }).catch(() => {});
    },
  };
}

/** Waits until `queue` holds nothing: no message ready, none delivered and unacknowledged. */
export async function untilQueueSettled(deadline: Deadline, queue: string, timeoutMs?: number): Promise<QueueInfo> {
  let last: QueueInfo | undefined;
  await deadline.until(
    async () => {
      last = await queueInfo(queue);
      return last !== undefined && last.ready === 0 && last.unacked === 0 && last.readyNow === 0;
    },
    `queue ${queue} is empty with nothing unacknowledged`,
    {
      timeoutMs,
      intervalMs: 200,
      describe: () => JSON.stringify(last),
    },
  );
  return last!;
}

// ---------------------------------------------------------------------------
// The service, seen from outside

/** The environment of a service process for one test (on top of spawnService's defaults). */
export function serviceEnv(
  db: { url: string },
  queue: { name: string },
  overrides: Record<string, string> = {},
): Record<string, string> {
  return {
    DATABASE_URL: db.url,
    RABBITMQ_URL,
    RABBITMQ_QUEUE: queue.name,
    RABBITMQ_QUEUE_TYPE: "classic",
    POSTGRES_SSLMODE: "disable",
    POSTGRES_MIN_CONNECTIONS: "2",
    POSTGRES_MAX_CONNECTIONS: "10",
    MAX_INFLIGHT_BATCHES: "2",
    MAX_RETRY_ATTEMPTS: "3",
    BATCH_SIZE: "50",
    BATCH_TIMEOUT_SECONDS: "0.05",
    RABBITMQ_PREFETCH_COUNT: "150",
    RETRY_DELAY_SECONDS: "0.1",
    SHUTDOWN_TIMEOUT_SECONDS: "15",
    ADMIN_TOKEN,
    LOG_LEVEL: "INFO",
    LOG_FORMAT: "text",
    ...overrides,
  };
}

/** GET or POST `path` on a service; the body parsed as JSON when it is. */
export async function call(
  service: ServiceProcess,
  path: string,
  init: RequestInit = {},
  // deno-lint-ignore no-explicit-any
): Promise<{ status: number; body: any }> {
  const response = await fetch(`${service.url}${path}`, init);
  const text = await response.text();
  const json = (response.headers.get("content-type") ?? "").includes("json");
  return { status: response.status, body: json ? JSON.parse(text) : text };
}

/** POST an admin route (`/pause`, `/resume`, `/flush`) with the suite's token. */
export function admin(service: ServiceProcess, path: string): ReturnType<typeof call> {
  return call(service, path, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
}

/** Sum of the samples of metric `name` (whose labels include `labels`) on the service's /metrics. */
export async function metric(
  service: ServiceProcess,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const { body } = await call(service, "/metrics");
  let sum = 0;
  for (const line of String(body).split("\n")) {
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/);
    if (!match || match[1] !== name) continue;
    const wanted = Object.entries(labels).every(([k, v]) => (match[2] ?? "").includes(`${k}="${v}"`));
    if (wanted) sum += Number(match[3]);
  }
  return sum;
}

/** The service's resident memory in MiB, as it reports it (`process_resident_memory_bytes`, from Deno.memoryUsage). */
export async function rssMbOf(service: ServiceProcess): Promise<number> {
  return (await metric(service, "process_resident_memory_bytes")) / 1024 / 1024;
}

// ---------------------------------------------------------------------------
// Mixes of votes with a known exact outcome

/** Deterministic pseudo-random numbers in [0, 1) (mulberry32), so a failing mix can be replayed from its seed. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What was published, and what the database and the DLQ must hold once it is all consumed. */
export interface Mix {
  /** Message bodies in publishing order. */
  bodies: string[];
  /** `vote_results` exactly: law → [oui, non]. */
  expected: Record<string, [number, number]>;
  /** Every content sent for each hash (the vote and its duplicate attempts), as {@link contentKey}s. */
  contents: Map<string, Set<string>>;
  /** Malformed messages: their unique id → the reject reason the DLQ must show. */
  malformed: Map<string, string>;
  /** How many of each kind were published. */
  sent: { valid: number; duplicates: number; copies: number; malformed: number };
}

/** Options of {@link buildMix}. */
export interface MixOptions {
  /** Distinct valid votes. */
  valid: number;
  /** Laws they are spread over. @default 10 */
  laws?: number;
  /** Duplicate attempts: same hash, law and choice as a counted vote, another timestamp (some published twice). */
  duplicates?: number;
  /** Exact copies of valid votes (redeliveries by the publisher: not duplicates). */
  copies?: number;
  /** Malformed messages, each with a unique id in its body. */
  malformed?: number;
  /** Shuffle everything (else valid votes first, the rest interleaved from the middle on). @default true */
  shuffle?: boolean;
  /** Seed of the pseudo-random choices. */
  seed?: number;
  /** First voter number (so two mixes in one database do not collide). @default 0 */
  voterBase?: number;
}

/** The key of one vote's content: what makes two votes with one hash the same vote or a duplicate attempt. */
export function contentKey(
  hash: string,
  lawId: string,
  choice: string,
  epochMs: number | null,
  citizenId: string | null,
): string {
  return [hash, lawId, choice, epochMs ?? "", citizenId ?? ""].join("|");
}

/**
 * A mix of valid votes in both upstream shapes, duplicate attempts, exact
 * copies and malformed messages. Duplicate attempts keep their vote's law and
 * choice (only the timestamp differs), so `vote_results` is the same whichever
 * copy of a hash arrives first.
 */
export function buildMix(options: MixOptions): Mix {
  const rand = random(options.seed ?? 1);
  const laws = options.laws ?? 10;
  const base = options.voterBase ?? 0;
  const votes: { body: string; voter: number; law: string; choice: "oui" | "non"; hash: string }[] = [];
  const expected: Record<string, [number, number]> = {};
  const contents = new Map<string, Set<string>>();
  for (let i = 0; i < options.valid; i++) {
    const law = `L${String(i % laws).padStart(2, "0")}`;
    const choice = rand() < 0.55 ? "oui" : "non";
    const voter = base + i;
    const hash = sha256(`voter-${voter}:${law}`); // as seedVote and workerVote hash it
    const body = i % 2 === 0
      ? seedVote(voter, law, choice)
      : workerVote(voter, law, rand() < 0.5 ? choice.toUpperCase() : choice);
    votes.push({ body, voter, law, choice, hash });
    expected[law] ??= [0, 0];
    expected[law][choice === "oui" ? 0 : 1] += 1;
    const parsed = JSON.parse(body);
    const ts = parsed.timestamp ?? parsed.vote_timestamp;
    contents.set(hash, new Set([contentKey(hash, law, choice, Date.parse(ts), parsed.citizen_id ?? null)]));
  }

  const extras: string[] = [];
  for (let d = 0; d < (options.duplicates ?? 0); d++) {
    const vote = votes[Math.floor(rand() * votes.length)];
    const ts = new Date(Date.UTC(2026, 10, 22, 12, 0, 0) + d * 1000).toISOString();
    const body = seedVote(vote.voter, vote.law, vote.choice, { timestamp: ts });
    contents.get(vote.hash)!.add(contentKey(vote.hash, vote.law, vote.choice, Date.parse(ts), `citizen-${vote.voter}`));
    extras.push(body);
    if (d % 4 === 0) extras.push(body); // the same attempt twice: recorded once
  }
  const duplicates = extras.length;
  for (let c = 0; c < (options.copies ?? 0); c++) extras.push(votes[Math.floor(rand() * votes.length)].body);

  const malformed = new Map<string, string>();
  const runId = crypto.randomUUID().slice(0, 8);
  for (let m = 0; m < (options.malformed ?? 0); m++) {
    const id = `mal-${runId}-${m}`;
    const kind = m % 5;
    const [body, reason] = kind === 0
      ? [`not json ${id}`, "invalid_json"]
      : kind === 1
      ? [JSON.stringify([id]), "not_an_object"]
      : kind === 2
      ? [JSON.stringify({ mid: id, law_id: "L00", choice: "oui" }), "missing_field"]
      : kind === 3
      ? [seedVote(base + m, "L00", "blanc", { mid: id }), "unknown_choice"]
      : [JSON.stringify({ mid: id, vote_hash: "xyz", law_id: "L00", choice: "oui" }), "invalid_field"];
    malformed.set(id, reason);
    extras.push(body);
  }

  let bodies: string[];
  if (options.shuffle ?? true) {
    bodies = [...votes.map((v) => v.body), ...extras];
    for (let i = bodies.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [bodies[i], bodies[j]] = [bodies[j], bodies[i]];
    }
  } else {
    bodies = votes.map((v) => v.body);
    for (const extra of extras) bodies.splice(Math.floor(bodies.length / 2 + rand() * bodies.length / 2), 0, extra);
  }
  return {
    bodies,
    expected,
    contents,
    malformed,
    sent: { valid: votes.length, duplicates, copies: options.copies ?? 0, malformed: malformed.size },
  };
}

/** Adds `b`'s expected results to `a`'s. */
export function addResults(
  a: Record<string, [number, number]>,
  b: Record<string, [number, number]>,
): Record<string, [number, number]> {
  const sum: Record<string, [number, number]> = structuredClone(a);
  for (const [law, [oui, non]] of Object.entries(b)) {
    sum[law] ??= [0, 0];
    sum[law][0] += oui;
    sum[law][1] += non;
  }
  return Object.fromEntries(Object.entries(sum).sort(([x], [y]) => x < y ? -1 : 1));
}

/** Merges the content sets of several mixes. */
export function mergeContents(...mixes: Mix[]): Map<string, Set<string>> {
  const merged = new Map<string, Set<string>>();
  for (const mix of mixes) {
    for (const [hash, set] of mix.contents) merged.set(hash, new Set([...(merged.get(hash) ?? []), ...set]));
  }
  return merged;
}

/**
 * Asserts the database holds exactly what `expected` and `contents` say:
 * `vote_results` equal to the distinct valid votes; one `vote_audit` row per
 * hash, holding one of the contents sent for it; `duplicate_attempts` holding
 * exactly the other contents, each once (so redeliveries and exact copies are
 * not there); and every counted vote counted by exactly one committed batch.
 */
export async function assertExactOutcome(
  sql: postgres.Sql,
  expected: Record<string, [number, number]>,
  contents: Map<string, Set<string>>,
): Promise<void> {
  assert.deepEqual(await results(sql), expected, "vote_results equals the distinct valid votes");

  const key = (
    r: { vote_hash: string; law_id: string; choice: string; ms: string | null; citizen_id: string | null },
  ) => contentKey(r.vote_hash, r.law_id, r.choice, r.ms === null ? null : Number(r.ms), r.citizen_id);
  const audit = await sql<
    { vote_hash: string; law_id: string; choice: string; ms: string | null; citizen_id: string | null }[]
  >`
    select vote_hash, law_id, choice, round(extract(epoch from "timestamp") * 1000)::bigint::text as ms, citizen_id
    from vote_audit`;
  assert.equal(audit.length, contents.size, "one vote_audit row per distinct hash");
  const stored = new Map<string, string>();
  for (const row of audit) {
    const k = key(row);
    assert.ok(contents.get(row.vote_hash)?.has(k), `vote_audit holds a vote that was sent: ${k}`);
    stored.set(row.vote_hash, k);
  }

  const dups = await sql<
    { vote_hash: string; law_id: string; choice: string; ms: string | null; citizen_id: string | null }[]
  >`
    select vote_hash, law_id, choice, round(extract(epoch from attempt_timestamp) * 1000)::bigint::text as ms, citizen_id
    from duplicate_attempts`;
  const expectedDups = new Set<string>();
  for (const [hash, set] of contents) for (const k of set) if (k !== stored.get(hash)) expectedDups.add(k);
  const actualDups = dups.map(key);
  assert.equal(new Set(actualDups).size, actualDups.length, "each duplicate attempt recorded once");
  assert.deepEqual(
    new Set(actualDups),
    expectedDups,
    "duplicate_attempts holds exactly the duplicate attempts sent (no redeliveries, no copies)",
  );

  const [{ counted }] = await sql<{ counted: number }[]>`
    select coalesce(sum(votes_counted), 0)::int as counted from aggregation_stats`;
  assert.equal(counted, contents.size, "every distinct vote counted by exactly one committed batch");
}

/**
 * Asserts the dead-letter queue holds every malformed message of `mix` at
 * least once, each with its reject reason, and nothing else.
 *
 * @returns how many messages were there more than once (dead-lettering is at-least-once: see the suite's notes)
 */
export function assertDeadLetters(messages: GetMessage[], malformed: Map<string, string>): number {
  const seen = new Map<string, number>();
  for (const message of messages) {
    const text = message.content.toString();
    const id = text.match(/mal-[0-9a-f]{8}-\d+/)?.[0];
    assert.ok(
      id !== undefined && malformed.has(id),
      `only malformed messages are dead-lettered, got ${text.slice(0, 200)}`,
    );
    assert.equal(message.properties.headers?.[REJECT_REASON_HEADER], malformed.get(id), `reject reason of ${id}`);
    seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  const missing = [...malformed.keys()].filter((id) => !seen.has(id));
  assert.deepEqual(missing, [], "every malformed message is in the DLQ");
  return messages.length - seen.size;
}
