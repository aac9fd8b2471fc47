/**
 * Test helpers: a fresh database and queue per test on the real PostgreSQL and
 * RabbitMQ (127.0.0.1 by default; `TEST_POSTGRES_URL` and `TEST_RABBITMQ_URL`
 * point elsewhere, e.g. at `docker compose up -d postgres rabbitmq`), votes to
 * publish, and waits on events instead of sleeps.
 *
 * @module
 */

import amqp from "amqplib";
import type { ConfirmChannel, GetMessage } from "amqplib";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import postgres from "postgres";
import { type Config, loadConfig } from "../lib/config.ts";
import { declareTopology } from "../lib/consumer.ts";
import { setupLogging } from "../lib/log.ts";

export const POSTGRES_URL = Deno.env.get("TEST_POSTGRES_URL") ?? "postgres://postgres@127.0.0.1:5432/postgres";
export const RABBITMQ_URL = Deno.env.get("TEST_RABBITMQ_URL") ?? "amqp://guest:guest@127.0.0.1:5672/";

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

/** A queue of its own (with its dead-letter exchange and queue), deleted at dispose. */
export interface TestQueue extends AsyncDisposable {
  name: string;
  dlq: string;
  channel: ConfirmChannel;
  /** Publishes persistent messages and waits for the broker's confirms. */
  publish(bodies: (string | Uint8Array)[]): Promise<void>;
  /** Messages waiting in `queue` (default: the vote queue). */
  count(queue?: string): Promise<number>;
  /** Takes every message from the dead-letter queue. */
  drainDeadLetters(): Promise<GetMessage[]>;
}

/** Declares nothing: the service declares its topology; publishing before it starts declares the queue plainly. */
export async function createTestQueue(options: { declare?: boolean; quorum?: boolean } = {}): Promise<TestQueue> {
  const name = uniqueName("votes_test");
  const dlq = `${name}.dlq`;
  let connection;
  try {
    connection = await amqp.connect(RABBITMQ_URL);
  } catch (error) {
    throw unreachable("RabbitMQ", RABBITMQ_URL, error);
  }
  // A broker restart (the fault suite does them) must fail the test that is using this, not crash the run.
  connection.on("error", () => {});
  const channel = await connection.createConfirmChannel();
  channel.on("error", () => {});
  if (options.declare !== false) {
    // The service's own topology, so that messages can be preloaded before it starts.
    await declareTopology(channel, {
      queue: name,
      queueType: options.quorum ? "quorum" : "classic",
      deliveryLimit: 20,
    });
  }
  return {
    name,
    dlq,
    channel,
    async publish(bodies) {
      for (const body of bodies) {
        const content = typeof body === "string" ? Buffer.from(body) : Buffer.from(body);
        if (!channel.sendToQueue(name, content, { persistent: true, contentType: "application/json" })) {
          await new Promise((resolve) => channel.once("drain", resolve));
        }
      }
      await channel.waitForConfirms();
    },
    async count(queue = name) {
      return (await channel.checkQueue(queue)).messageCount;
    },
    async drainDeadLetters() {
      const messages: GetMessage[] = [];
      for (;;) {
        const message = await channel.get(dlq, { noAck: true });
        if (message === false) return messages;
        messages.push(message);
      }
    },
    async [Symbol.asyncDispose]() {
      await channel.deleteQueue(name).catch(() => {});
      await channel.deleteQueue(dlq).catch(() => {});
      await channel.deleteExchange(`${name}.dlx`).catch(() => {});
      await connection.close().catch(() => {});
    },
  };
}

/** The service's configuration for a test: its own queue and database, an ephemeral HTTP port. */
export function testConfig(
  db: { url: string },
  queue: { name: string },
  overrides: Record<string, string> = {},
): Config {
  return loadConfig({
    DATABASE_URL: db.url,
    RABBITMQ_URL,
    RABBITMQ_QUEUE: queue.name,
    PROMETHEUS_PORT: "0",
    HTTP_HOST: "127.0.0.1",
    POSTGRES_SSLMODE: "disable",
    BATCH_TIMEOUT_SECONDS: "0.05",
    RETRY_DELAY_SECONDS: "0.05",
    ...overrides,
  });
}

/** SHA-256 hex of `text`: the hash of a test voter. */
export function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** A vote message body in the seed publisher's shape. */
export function seedVote(
  voter: number,
  lawId: string,
  choice: string,
  extra: Record<string, unknown> = {},
): string {
  return JSON.stringify({
    vote_hash: sha256(`voter-${voter}:${lawId}`),
    citizen_id: `citizen-${voter}`,
    law_id: lawId,
    choice,
    timestamp: "2026-11-22T10:00:00Z",
    metadata: { source: "test" },
    ...extra,
  });
}

/** A vote message body in the validation worker's shape. */
export function workerVote(voter: number, lawId: string, vote: string): string {
  return JSON.stringify({
    voter_hash: sha256(`voter-${voter}:${lawId}`),
    law_id: lawId,
    vote,
    vote_timestamp: "2026-11-22T10:00:01.123456+01:00",
    status: "validated",
    processed_timestamp: "2026-11-22T10:00:02Z",
  });
}

/**
 * Resolves when `predicate()` holds, checked at every `event` on `target`;
 * rejects after `timeoutMs` with what `describe()` says.
 */
export function waitForEvent(
  target: EventTarget,
  event: string,
  predicate: () => boolean,
  timeoutMs = 20_000,
  describe: () => string = () => "",
): Promise<void> {
  if (predicate()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!predicate()) return;
      clearTimeout(timer);
      target.removeEventListener(event, check);
      resolve();
    };
    const timer = setTimeout(() => {
      target.removeEventListener(event, check);
      reject(new Error(`timed out after ${timeoutMs} ms waiting on '${event}' ${describe()}`));
    }, timeoutMs);
    target.addEventListener(event, check);
  });
}

/** `vote_results` as `{law: [oui, non]}`. */
export async function results(sql: postgres.Sql): Promise<Record<string, [number, number]>> {
  const rows = await sql<{ law_id: string; oui_count: string; non_count: string }[]>`
    select law_id, oui_count, non_count from vote_results order by law_id`;
  return Object.fromEntries(rows.map((r) => [r.law_id, [Number(r.oui_count), Number(r.non_count)]]));
}

/**
 * Resolves when `predicate()` holds, checked every `intervalMs`; for states no
 * event announces (a queue's depth, a row count). Rejects after `timeoutMs`.
 */
export async function waitUntil(
  predicate: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 20_000,
  intervalMs = 10,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
