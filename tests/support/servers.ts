/**
 * Fixtures on the real servers: a fresh database and a fresh queue per test on
 * the real PostgreSQL and RabbitMQ (127.0.0.1 by default; `TEST_POSTGRES_URL`
 * and `TEST_RABBITMQ_URL` point elsewhere, e.g. at
 * `docker compose up -d postgres rabbitmq`), and the broker's own view of
 * queues and connections (`rabbitmqctl`). Nothing is mocked.
 *
 * @module
 */

import amqp from "amqplib";
import type { ChannelModel, ConfirmChannel, GetMessage } from "amqplib";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import postgres from "postgres";
import { declareTopology } from "../../lib/broker/topology.ts";
import { connectDatabase, type Sql } from "../../lib/database/pool.ts";
import { setupLogging } from "../../lib/log.ts";
import type { Vote } from "../../lib/vote.ts";
import { stdoutOf } from "./command.ts";
import { Deadline } from "./wait.ts";

export const POSTGRES_URL = Deno.env.get("TEST_POSTGRES_URL") ?? "postgres://postgres@127.0.0.1:5432/postgres";
export const RABBITMQ_URL = Deno.env.get("TEST_RABBITMQ_URL") ?? "amqp://guest:guest@127.0.0.1:5672/";

/** Real restarts of RabbitMQ and PostgreSQL disturb everyone on the machine: only with `FAULT_RESTARTS=1`. */
export const FAULT_RESTARTS = Deno.env.get("FAULT_RESTARTS") === "1";

await setupLogging(Deno.env.get("TEST_LOG_LEVEL") === "DEBUG" ? "DEBUG" : "ERROR", "text");

const unreachable = (what: string, url: string, error: unknown) =>
  new Error(
    `Cannot reach ${what} at ${url.replace(/:[^:@/]*@/, ":***@")} (${(error as Error).message}). ` +
      "The integration tests need it: start it (see .ci/run), or `docker compose up -d postgres rabbitmq`.",
  );

/** A unique name for this test's queue and database. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
}

/** A database of its own, dropped at dispose. */
export interface TestDatabase extends AsyncDisposable {
  name: string;
  url: string;
  /** A connection to it, for assertions. */
  sql: postgres.Sql;
}

/** Creates an empty database for one test. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = uniqueName("va_test");
  const admin = postgres(POSTGRES_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${name}`);
  } catch (error) {
    await admin.end();
    throw unreachable("PostgreSQL", POSTGRES_URL, error);
  }
  const url = new URL(POSTGRES_URL);
  url.pathname = `/${name}`;
  const sql = postgres(url.toString(), { max: 2, onnotice: () => {} });
  return {
    name,
    url: url.toString(),
    sql,
    async [Symbol.asyncDispose]() {
      await sql.end({ timeout: 1 });
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/** The service's own pool (`connectDatabase`) on a test database, without TLS. */
export function testPool(url: string, max = 2): Sql {
  return connectDatabase({
    databaseUrl: url,
    postgresMaxConnections: max,
    postgresSslMode: "disable",
    postgresSslRootCert: undefined,
  });
}

/**
 * Holds the lock on `law`'s `vote_results` row (inserting it at 0 if missing)
 * until disposed: a commit that counts a vote for it blocks meanwhile, so a
 * test can keep a commit in flight for as long as it needs.
 */
export async function lockLaw(sql: postgres.Sql, law: string): Promise<AsyncDisposable> {
  const locked = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  const transaction = sql.begin(async (tx) => {
    await tx`insert into vote_results (law_id) values (${law}) on conflict do nothing`;
    await tx`select 1 from vote_results where law_id = ${law} for update`;
    locked.resolve();
    await release.promise;
  });
  transaction.catch(locked.reject);
  await locked.promise;
  return {
    async [Symbol.asyncDispose]() {
      release.resolve();
      await transaction;
    },
  };
}

/** `vote_results` as `{law: [oui, non]}`. */
export async function results(sql: postgres.Sql): Promise<Record<string, [number, number]>> {
  const rows = await sql<{ law_id: string; oui_count: string; non_count: string }[]>`
    select law_id, oui_count, non_count from vote_results order by law_id`;
  return Object.fromEntries(rows.map((r) => [r.law_id, [Number(r.oui_count), Number(r.non_count)]]));
}

/**
 * `vote_audit` rows for `votes`, written directly: `'validated'`, as the validation worker writes them
 * before it publishes (the seed's `vote` column, no `choice`), or `'aggregated'`, as if counted before.
 * In chunks of 10,000 (one statement each).
 */
export async function insertAuditRows(sql: postgres.Sql, votes: readonly Vote[], status: "validated" | "aggregated") {
  for (let i = 0; i < votes.length; i += 10_000) {
    const part = votes.slice(i, i + 10_000);
    await sql`
      insert into vote_audit (vote_hash, citizen_id, law_id, vote, status, "timestamp")
      select h, c, l, v, ${status}, t
      from unnest(${sql.array(part.map((v) => v.hash))}::text[], ${sql.array(part.map((v) => v.citizenId))}::text[],
                  ${sql.array(part.map((v) => v.lawId))}::text[], ${sql.array(part.map((v) => v.choice))}::text[],
                  ${sql.array(part.map((v) => v.timestamp))}::timestamptz[]) as u(h, c, l, v, t)`;
  }
}

/** Votes counted in `vote_results`; 0 before the service created the table. */
export async function visibleVotes(sql: postgres.Sql): Promise<number> {
  try {
    const [{ n }] = await sql`select coalesce(sum(oui_count + non_count), 0)::int8 as n from vote_results`;
    return Number(n);
  } catch (error) {
    if ((error as { code?: string }).code === "42P01") return 0;
    throw error;
  }
}

/**
 * A vote queue of its own (with its dead-letter exchange and queue), deleted at
 * dispose. `channel` is one long-lived confirm channel for the test's own
 * calls; the helpers each use a short-lived connection, so they survive a
 * broker restart (the fault suite does them).
 */
export interface TestQueue extends AsyncDisposable {
  name: string;
  dlq: string;
  dlx: string;
  channel: ConfirmChannel;
  /** Declares the service's own topology (`declareTopology`), so messages can be preloaded before it starts. */
  declare(options?: { quorum?: boolean; deliveryLimit?: number }): Promise<void>;
  /** Publishes persistent messages and waits for the broker's confirms. */
  publish(bodies: (string | Uint8Array)[]): Promise<void>;
  /** Messages ready in `queue` (default: the vote queue). */
  count(queue?: string): Promise<number>;
  /** Takes every message from the dead-letter queue. */
  takeDeadLetters(): Promise<GetMessage[]>;
  /** The broker's counts (see {@link queueInfo}); throws when the queue does not exist. */
  info(): Promise<QueueInfo>;
}

/** Options of {@link createTestQueue}. */
export interface TestQueueOptions {
  /** Declare the service's topology now. @default true */
  declare?: boolean;
  /** Declare it as a quorum queue. @default false */
  quorum?: boolean;
  /** Prefix of the unique name. @default "votes_test" */
  prefix?: string;
  /** Broker to use (e.g. a node of `cluster.ts`'s cluster). @default RABBITMQ_URL */
  url?: string;
}

/** Creates a {@link TestQueue}. */
export async function createTestQueue(options: TestQueueOptions = {}): Promise<TestQueue> {
  const name = uniqueName(options.prefix ?? "votes_test");
  const dlq = `${name}.dlq`;
  const dlx = `${name}.dlx`;
  const url = options.url ?? RABBITMQ_URL;
  const withChannel = <T>(fn: (channel: ConfirmChannel, model: ChannelModel) => Promise<T>) => withChannelOn(url, fn);
  let connection: ChannelModel;
  try {
    connection = await amqp.connect(url);
  } catch (error) {
    throw unreachable("RabbitMQ", url, error);
  }
  // A broker restart must fail the test that is using this, not crash the run.
  connection.on("error", () => {});
  const channel = await connection.createConfirmChannel();
  channel.on("error", () => {});
  const queue: TestQueue = {
    name,
    dlq,
    dlx,
    channel,
    declare: (declare = {}) =>
      withChannel((ch) =>
        declareTopology(ch, {
          queue: name,
          queueType: declare.quorum ? "quorum" : "classic",
          deliveryLimit: declare.deliveryLimit ?? 20,
        })
      ),
    publish: (bodies) =>
      withChannel(async (ch) => {
        for (let i = 0; i < bodies.length; i++) {
          const ok = ch.sendToQueue(name, Buffer.from(bodies[i]), {
            persistent: true,
            contentType: "application/json",
          });
          if (!ok) await new Promise((resolve) => ch.once("drain", resolve));
          if (i % 5000 === 4999) await ch.waitForConfirms();
        }
        await ch.waitForConfirms();
      }),
    count: (queueName = name) => withChannel(async (ch) => (await ch.checkQueue(queueName)).messageCount),
    takeDeadLetters: () =>
      withChannel(async (ch) => {
        const messages: GetMessage[] = [];
        for (;;) {
          const message = await ch.get(dlq, { noAck: true });
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
      await withChannel(async (ch) => {
        await ch.deleteQueue(name).catch(() => {});
        await ch.deleteQueue(dlq).catch(() => {});
        await ch.deleteExchange(dlx).catch(() => {});
      }).catch(() => {});
      await connection.close().catch(() => {});
    },
  };
  if (options.declare !== false) await queue.declare({ quorum: options.quorum });
  return queue;
}

/** Runs `rabbitmqctl` with `args`: its stdout; rejects with all it printed on failure. */
export function rabbitmqctl(...args: string[]): Promise<string> {
  return stdoutOf(
    new Deno.Command("rabbitmqctl", { args, stdout: "piped", stderr: "piped" }),
    `rabbitmqctl ${args.join(" ")}`,
  );
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
  return await brokerConnectionsFrom(new Set(await tcpLocalPorts(pid, brokerPort)));
}

/** The broker's ids of the AMQP connections whose client side is on one of local `ports` (e.g. a proxy's). */
export async function brokerConnectionsFrom(ports: Set<number>): Promise<string[]> {
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
export function withChannel<T>(fn: (channel: ConfirmChannel, model: ChannelModel) => Promise<T>): Promise<T> {
  return withChannelOn(RABBITMQ_URL, fn);
}

/** {@link withChannel} on the broker at `url`. */
export async function withChannelOn<T>(
  url: string,
  fn: (channel: ConfirmChannel, model: ChannelModel) => Promise<T>,
): Promise<T> {
  const model = await amqp.connect(url);
  model.on("error", () => {});
  const channel = await model.createConfirmChannel();
  channel.on("error", () => {});
  try {
    return await fn(channel, model);
  } finally {
    await model.close().catch(() => {});
  }
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

/**
 * Runs `pg_ctlcluster` on the newest installed cluster `main` (as .ci/run finds it): a machine-wide
 * fault, only with {@link FAULT_RESTARTS}.
 */
export async function pgctl(action: string, ...options: string[]): Promise<boolean> {
  const versions: string[] = [];
  for await (const entry of Deno.readDir("/etc/postgresql")) versions.push(entry.name);
  const version = versions.sort((a, b) => Number(a) - Number(b)).at(-1) ?? "15";
  const out = await new Deno.Command("pg_ctlcluster", {
    args: ["--skip-systemctl-redirect", ...options, version, "main", action],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) console.error(`pg_ctlcluster ${action}: ${new TextDecoder().decode(out.stderr)}`);
  return out.success;
}

/** Starts PostgreSQL if it is down and waits until it accepts connections (`pg_isready`). */
export async function ensurePostgres(): Promise<void> {
  const ready = async () =>
    (await new Deno.Command("pg_isready", { args: ["-h", "127.0.0.1", "-q"] }).output()).success;
  if (!(await ready())) await pgctl("start");
  const deadline = new Deadline("PostgreSQL back", 60_000);
  await deadline.until(ready, "PostgreSQL accepts connections", { intervalMs: 200 });
}

/** Starts RabbitMQ's app (and the node, if it is down) and waits until it serves (`await_startup`). */
export async function ensureRabbitMQ(): Promise<void> {
  try {
    await rabbitmqctl("start_app");
  } catch {
    await new Deno.Command("rabbitmq-server", { args: ["-detached"] }).output();
  }
  await rabbitmqctl("await_startup", "--timeout", "120");
}
