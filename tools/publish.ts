/**
 * Load publisher: publishes generated votes to the service's queue, as the
 * seed's `test_publisher.py` did, but persistent and confirmed by the broker,
 * with duplicates and malformed messages mixed in on request, and ending with
 * the exact totals `vote_results` must hold once the service has consumed them.
 *
 * ```sh
 * deno task publish -n 10000 --dup 0.05 --bad 0.01
 * deno task publish -n 30000 --rate 1000 --json | jq .expected
 * ```
 *
 * The generator and the publishing loop are exported for the benchmark and the tests:
 *
 * @example
 * ```ts
 * import { generateVotes, publishVotes } from "./publish.ts";
 * const votes = generateVotes({ count: 1000, duplicateFraction: 0.05, seed: 42 });
 * await publishVotes(channel, "votes.aggregation", votes.bodies);
 * console.log(votes.expected); // { "LAW-001": { oui: 97, non: 93 }, ... }
 * ```
 *
 * @module
 */

import amqp from "amqplib";
import type { ChannelModel, ConfirmChannel } from "amqplib";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { loadConfigOrExit, numberFlag, orExit, parseFlags, UsageError } from "../lib/config/cli.ts";
import { redactUrl } from "../lib/config/url.ts";
import { VARIABLES } from "../lib/config/variables.ts";
import { brokerSocketOptions } from "../lib/broker/connect.ts";
import { declareTopology, type QueueOptions } from "../lib/broker/topology.ts";
import { seededRandom } from "../tests/support/random.ts";

/** What a generated message is meant to be. */
export type MessageKind = "valid" | "duplicate" | "malformed";

/** How a malformed message is broken; each is dead-lettered by the service. */
export type MalformedKind = "invalid_json" | "missing_field" | "unknown_choice" | "bad_hash";

/** The malformed kinds, in the order they are cycled through. */
export const MALFORMED_KINDS: readonly MalformedKind[] = [
  "invalid_json",
  "missing_field",
  "unknown_choice",
  "bad_hash",
];

/** Per-law totals: what `vote_results` holds once the messages are consumed. */
export type ExpectedTotals = Record<string, { oui: number; non: number }>;

/** Options of {@link generateVotes}. */
export interface GenerateOptions {
  /** Messages in all (valid, duplicate and malformed). @default 1000 */
  count?: number;
  /** Laws the votes are spread over, named `LAW-001`, `LAW-002`, … @default 5 */
  laws?: number;
  /** Fraction of the messages that reuse an earlier vote's hash with other content. @default 0 */
  duplicateFraction?: number;
  /** Fraction of the messages that are not votes. @default 0 */
  malformedFraction?: number;
  /** Seed of the generator: the same seed gives the same messages. @default a random one */
  seed?: number;
  /**
   * A duplicate that changes the choice comes at least this many messages after
   * its original. Set it to the consumer's prefetch: the original is then
   * acknowledged, so committed, before the duplicate is delivered, and "first
   * wins" holds even with several batches committing at once. Closer duplicates
   * change only the timestamp, which leaves the totals the same whichever copy wins.
   * @default the service's default RABBITMQ_PREFETCH_COUNT
   */
  minDuplicateDistance?: number;
  /** Timestamp of message 0 (ms since the epoch); message i is i ms later. @default 2026-11-22T10:00:00Z */
  startTime?: number;
}

/** Generated messages, materialized on demand, and what they must count to. */
export interface GeneratedVotes {
  /** The seed used (random unless given). */
  seed: number;
  count: number;
  /** Distinct votes: each counts once. */
  valid: number;
  /** Messages reusing a valid vote's hash with other content: recorded in `duplicate_attempts`, not counted. */
  duplicates: number;
  /** Messages that are not votes: dead-lettered. */
  malformed: number;
  malformedByKind: Record<MalformedKind, number>;
  /** Exactly what `vote_results` must equal (laws without a valid vote have no row). */
  expected: ExpectedTotals;
  /** The messages in publishing order; each iteration encodes them afresh, so memory stays flat. */
  bodies: Iterable<Uint8Array>;
  /** Message `index`'s body (UTF-8 JSON, or not JSON when malformed that way). */
  body(index: number): Uint8Array;
  kind(index: number): MessageKind;
}

const KIND_VALID = 0;
const KIND_DUPLICATE = 1;
const KIND_MALFORMED = 2;
const KINDS: readonly MessageKind[] = ["valid", "duplicate", "malformed"];
const DEFAULT_START = Date.UTC(2026, 10, 22, 10, 0, 0);
/** Most laws one run spreads votes over (ids stay short; the plan stores a law in 16 bits). */
export const MAX_LAWS = 10_000;

/**
 * Generates `count` messages: valid votes with distinct hashes, duplicate
 * attempts and malformed messages at the given fractions (rounded to the
 * nearest message), shuffled deterministically by `seed`.
 *
 * @throws {RangeError} when an option breaks its rule
 */
export function generateVotes(options: GenerateOptions = {}): GeneratedVotes {
  const count = options.count ?? 1000;
  const lawCount = options.laws ?? 5;
  const duplicateFraction = options.duplicateFraction ?? 0;
  const malformedFraction = options.malformedFraction ?? 0;
  const seed = options.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
  const minDistance = options.minDuplicateDistance ?? Number(VARIABLES.RABBITMQ_PREFETCH_COUNT.default);
  const startTime = options.startTime ?? DEFAULT_START;
  checkInteger("count", count, 0, 2 ** 31 - 1);
  checkInteger("laws", lawCount, 1, MAX_LAWS);
  checkInteger("seed", seed, 0, 2 ** 32 - 1);
  checkInteger("minDuplicateDistance", minDistance, 0, 2 ** 31 - 1);
  checkFraction("duplicateFraction", duplicateFraction);
  checkFraction("malformedFraction", malformedFraction);

  const duplicates = Math.round(count * duplicateFraction);
  const malformed = Math.round(count * malformedFraction);
  const valid = count - duplicates - malformed;
  if (valid < 0 || (duplicates > 0 && valid === 0)) {
    throw new RangeError(
      `Cannot generate as duplicateFraction + malformedFraction leaves no valid vote for the duplicates to copy: ` +
        `current values are ${duplicateFraction} and ${malformedFraction} of ${count}`,
    );
  }

  const random = seededRandom(seed);
  const width = Math.max(3, String(lawCount).length);
  const laws = Array.from({ length: lawCount }, (_, i) => `LAW-${String(i + 1).padStart(width, "0")}`);
  // Each law leans its own way, so per-law totals differ and a swapped law shows.
  const ouiShare = Array.from({ length: lawCount }, () => 0.3 + 0.4 * random());

  const kinds = new Uint8Array(count);
  kinds.fill(KIND_DUPLICATE, valid, valid + duplicates).fill(KIND_MALFORMED, valid + duplicates);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [kinds[i], kinds[j]] = [kinds[j], kinds[i]];
  }
  // A duplicate needs an earlier vote to copy.
  const firstValid = kinds.indexOf(KIND_VALID);
  const firstDuplicate = kinds.indexOf(KIND_DUPLICATE);
  if (firstDuplicate !== -1 && firstDuplicate < firstValid) {
    [kinds[firstDuplicate], kinds[firstValid]] = [KIND_VALID, KIND_DUPLICATE];
  }

  // Per message: its law and choice (valid), the original it copies (duplicate), or how it is broken (malformed).
  const law = new Uint16Array(count);
  const oui = new Uint8Array(count);
  const original = new Int32Array(count);
  const flip = new Uint8Array(count);
  const validSoFar = new Int32Array(valid);
  let nValid = 0;
  let nFar = 0;
  let nMalformed = 0;
  const malformedByKind = Object.fromEntries(MALFORMED_KINDS.map((k) => [k, 0])) as Record<MalformedKind, number>;
  const expectedOui = new Array<number>(lawCount).fill(0);
  const expectedNon = new Array<number>(lawCount).fill(0);
  for (let i = 0; i < count; i++) {
    if (kinds[i] === KIND_VALID) {
      const l = Math.floor(random() * lawCount);
      law[i] = l;
      oui[i] = random() < ouiShare[l] ? 1 : 0;
      if (oui[i]) expectedOui[l] += 1;
      else expectedNon[l] += 1;
      validSoFar[nValid++] = i;
    } else if (kinds[i] === KIND_DUPLICATE) {
      while (nFar < nValid && validSoFar[nFar] <= i - minDistance) nFar++;
      const far = nFar > 0;
      const o = validSoFar[Math.floor(random() * (far ? nFar : nValid))];
      original[i] = o;
      law[i] = law[o];
      flip[i] = far ? 1 : 0;
      oui[i] = far ? 1 - oui[o] : oui[o];
    } else {
      original[i] = nMalformed++ % MALFORMED_KINDS.length;
      malformedByKind[MALFORMED_KINDS[original[i]]] += 1;
      law[i] = Math.floor(random() * lawCount);
    }
  }

  const expected: ExpectedTotals = {};
  laws.forEach((id, l) => {
    if (expectedOui[l] + expectedNon[l] > 0) expected[id] = { oui: expectedOui[l], non: expectedNon[l] };
  });

  const voter = (i: number) => `citizen-${seed}-${i}`;
  const hashOf = (i: number) => createHash("sha256").update(`${voter(i)}:${laws[law[i]]}`).digest("hex");
  const vote = (i: number, as: number) => ({
    vote_hash: hashOf(as),
    citizen_id: voter(as),
    law_id: laws[law[i]],
    choice: oui[i] ? "oui" : "non",
    // Distinct per message, so each duplicate attempt is distinct content and is recorded once.
    timestamp: new Date(startTime + i).toISOString(),
    metadata: { source: "publish", seq: i },
  });
  const body = (i: number): Uint8Array => {
    if (!Number.isInteger(i) || i < 0 || i >= count) {
      throw new RangeError(
        `Cannot make body as 'index' must be an integer from 0 to ${count - 1}: current value is ${i}`,
      );
    }
    if (kinds[i] === KIND_VALID) return Buffer.from(JSON.stringify(vote(i, i)));
    if (kinds[i] === KIND_DUPLICATE) return Buffer.from(JSON.stringify(vote(i, original[i])));
    const message: Record<string, unknown> = vote(i, i);
    switch (MALFORMED_KINDS[original[i]]) {
      case "invalid_json":
        return Buffer.from(JSON.stringify(message).slice(0, -1));
      case "missing_field":
        delete message.law_id;
        break;
      case "unknown_choice":
        message.choice = "peut-être";
        break;
      case "bad_hash":
        message.vote_hash = `${(message.vote_hash as string).slice(0, 62)}zz`;
        break;
    }
    return Buffer.from(JSON.stringify(message));
  };

  return {
    seed,
    count,
    valid,
    duplicates,
    malformed,
    malformedByKind,
    expected,
    bodies: {
      *[Symbol.iterator]() {
        for (let i = 0; i < count; i++) yield body(i);
      },
    },
    body,
    kind: (i) => KINDS[kinds[i]],
  };
}

/** Options of {@link publishVotes}. */
export interface PublishOptions {
  /** Messages per second; unpaced when absent. */
  rate?: number;
  /**
   * Messages published but not yet confirmed before publishing waits for
   * confirms (down to half of it): enough to keep the broker busy, few enough
   * that a failure is noticed early. @default 2000
   */
  window?: number;
  /** Called with the count confirmed so far, at most every 100 ms and once at the end. */
  onProgress?: (confirmed: number) => void;
  /** Called as message `index` is handed to the client library, with `performance.now()`. */
  onSent?: (index: number, time: number) => void;
  /** Stops publishing: the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** What {@link publishVotes} did. */
export interface PublishResult {
  /** Messages published and confirmed by the broker. */
  published: number;
  seconds: number;
  /** Messages per second, confirms included. */
  rate: number;
}

const PERSISTENT_JSON = { persistent: true, contentType: "application/json" } as const;

/**
 * Publishes `bodies` to `queue` as persistent messages on a confirm channel,
 * and resolves once the broker has confirmed every one.
 *
 * @throws when the broker refuses a message (nack) or the channel closes: the
 *   messages not confirmed may or may not be in the queue
 */
export async function publishVotes(
  channel: ConfirmChannel,
  queue: string,
  bodies: Iterable<Uint8Array>,
  options: PublishOptions = {},
): Promise<PublishResult> {
  const window = options.window ?? 2000;
  checkInteger("window", window, 1, 1_000_000, "publish");
  if (options.rate !== undefined && !(options.rate > 0)) {
    throw new RangeError(`Cannot publish as 'rate' must be a positive number: current value is ${options.rate}`);
  }
  const intervalMs = options.rate === undefined ? 0 : 1000 / options.rate;
  const signal = options.signal;

  let sent = 0;
  let confirmed = 0;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const onConfirm = (error: unknown) => {
    confirmed += 1;
    if (error && !failure) {
      failure = new Error(
        `RabbitMQ did not confirm a message published to ${queue} (${String(error)}); the messages not ` +
          "confirmed may or may not be in the queue: check the broker (rabbitmqctl status) and publish again",
      );
    }
    if (wake && (sent - confirmed <= window / 2 || failure)) wake();
  };
  // Whatever it waits on, a closed channel or an abort ends the wait.
  const until = (arm: (resolve: () => void) => void) =>
    new Promise<void>((resolve, reject) => {
      const onClose = () => reject(failure ?? new Error(`The channel to RabbitMQ closed while publishing to ${queue}`));
      const onAbort = () => reject(signal?.reason);
      const done = () => {
        channel.off("close", onClose);
        signal?.removeEventListener("abort", onAbort);
        wake = undefined;
        resolve();
      };
      channel.once("close", onClose);
      signal?.addEventListener("abort", onAbort, { once: true });
      arm(done);
    });

  const start = performance.now();
  let lastProgress = start;
  for (const body of bodies) {
    signal?.throwIfAborted();
    if (failure) throw failure;
    if (intervalMs > 0) {
      const due = start + sent * intervalMs;
      const wait = due - performance.now();
      if (wait > 1) await until((done) => setTimeout(done, wait));
    }
    const content = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    const writable = channel.sendToQueue(queue, content, PERSISTENT_JSON, onConfirm);
    options.onSent?.(sent, performance.now());
    sent += 1;
    if (!writable) await until((done) => channel.once("drain", done));
    if (sent - confirmed >= window) await until((done) => (wake = done));
    if (options.onProgress && performance.now() - lastProgress >= 100) {
      options.onProgress(confirmed);
      lastProgress = performance.now();
    }
  }
  await channel.waitForConfirms();
  if (failure) throw failure;
  const seconds = (performance.now() - start) / 1000;
  options.onProgress?.(confirmed);
  return { published: confirmed, seconds, rate: seconds > 0 ? confirmed / seconds : 0 };
}

/**
 * Declares the service's topology for `options.queue` (lib/consumer.ts's
 * `declareTopology`: the queue with its dead-letter exchange and queue), but
 * only when the queue does not exist: an existing queue is left as it is,
 * whatever its arguments. Publishing before the service first started then
 * does not create a plain queue that the service would find with other arguments.
 *
 * @returns whether the queue had to be declared
 */
export async function ensureTopology(connection: ChannelModel, options: QueueOptions): Promise<boolean> {
  // A failed check closes its channel, so it gets one of its own.
  const probe = await connection.createChannel();
  probe.on("error", () => {});
  try {
    await probe.checkQueue(options.queue);
    await probe.close();
    return false;
  } catch (error) {
    if ((error as { code?: number }).code !== 404) throw error;
  }
  const channel = await connection.createChannel();
  try {
    await declareTopology(channel, options);
  } finally {
    await channel.close().catch(() => {});
  }
  return true;
}

function checkInteger(name: string, value: number, min: number, max: number, action = "generate"): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Cannot ${action} as '${name}' must be an integer from ${min} to ${max}: current value is ${value}`,
    );
  }
}

function checkFraction(name: string, value: number): void {
  if (!(value >= 0 && value <= 1)) {
    throw new RangeError(`Cannot generate as '${name}' must be a fraction from 0 to 1: current value is ${value}`);
  }
}

const USAGE = `Usage: deno task publish [options]

Publishes generated votes to the service's queue (RABBITMQ_* from the environment or .env)
and prints the rate and the exact totals vote_results must reach.

  -n, --count N      messages to publish (default 1000)
      --rate R       messages per second (default: as fast as the broker confirms)
      --laws N       laws to spread the votes over, LAW-001… (default 5)
      --dup F        fraction of duplicate attempts: an earlier vote's hash, other content (default 0)
      --bad F        fraction of malformed messages, dead-lettered by the service (default 0)
      --seed N       generator seed, to publish the same messages again (default random)
      --queue NAME   queue to publish to (default RABBITMQ_QUEUE)
      --json         end with one JSON line instead of text
  -h, --help         this help

Duplicates that change the choice come at least RABBITMQ_PREFETCH_COUNT messages after
their original, so the totals are exact for a service running with that prefetch or less.`;

/** A command-line mistake: one line on stderr and exit code 2. */

interface Cli {
  count: number;
  rate: number | undefined;
  laws: number;
  dup: number;
  bad: number;
  seed: number | undefined;
  queue: string | undefined;
  json: boolean;
  help: boolean;
}

function parseCli(args: string[]): Cli {
  const values = parseFlags(args, {
    count: { type: "string", short: "n" },
    rate: { type: "string" },
    laws: { type: "string" },
    dup: { type: "string" },
    bad: { type: "string" },
    seed: { type: "string" },
    queue: { type: "string" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  });
  const number = numberFlag;
  const fraction = (n: number) => n >= 0 && n <= 1;
  const cli: Cli = {
    count: number("count", values.count, (n) => Number.isInteger(n) && n >= 1 && n < 2 ** 31, "a positive integer") ??
      1000,
    rate: number("rate", values.rate, (n) => Number.isFinite(n) && n > 0, "a positive number of messages per second"),
    laws: number("laws", values.laws, (n) => Number.isInteger(n) && n >= 1 && n <= MAX_LAWS, `1 to ${MAX_LAWS}`) ?? 5,
    dup: number("dup", values.dup, fraction, "a fraction from 0 to 1") ?? 0,
    bad: number("bad", values.bad, fraction, "a fraction from 0 to 1") ?? 0,
    seed: number(
      "seed",
      values.seed,
      (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32,
      "an integer from 0 to 2^32-1",
    ),
    queue: values.queue,
    json: values.json,
    help: values.help,
  };
  if (cli.queue !== undefined && (cli.queue.length === 0 || cli.queue.length > 255)) {
    throw new UsageError(`--queue must be 1 to 255 characters: current value is "${cli.queue}"`);
  }
  if (cli.dup + cli.bad > 1) {
    throw new UsageError(`--dup plus --bad must be at most 1: current values are ${cli.dup} and ${cli.bad}`);
  }
  return cli;
}

function progressBar(total: number): ((done: number) => void) | undefined {
  if (!Deno.stdout.isTerminal()) return undefined;
  const encoder = new TextEncoder();
  const start = performance.now();
  return (done) => {
    const width = 30;
    const filled = Math.round((done / total) * width);
    const rate = done / Math.max(0.001, (performance.now() - start) / 1000);
    const line = `\r[${"#".repeat(filled)}${" ".repeat(width - filled)}] ${
      Math.floor((done / total) * 100)
    }% ${done}/${total} ${Math.round(rate)}/s`;
    Deno.stdout.writeSync(encoder.encode(line));
  };
}

/** The final line for people: rate, counts sent, and the totals to expect. */
function summaryLine(queue: string, result: PublishResult, votes: GeneratedVotes): string {
  const laws = Object.entries(votes.expected).map(([law, t]) => `${law} oui=${t.oui} non=${t.non}`).join(", ");
  return `Published ${result.published} messages to ${queue} in ${result.seconds.toFixed(2)} s (${
    Math.round(result.rate)
  }/s): ${votes.valid} valid, ${votes.duplicates} duplicate, ${votes.malformed} malformed (seed ${votes.seed}). ` +
    `On a fresh database vote_results must equal: ${laws || "(no rows)"}`;
}

async function main(args: string[]): Promise<number> {
  const cli = await orExit("publish", () => parseCli(args), { hint: " (see --help)" });
  if (cli.help) {
    console.log(USAGE);
    return 0;
  }
  const config = await loadConfigOrExit("publish", { hint: " (see --help)" });
  const queue = cli.queue ?? config.rabbitmqQueue;
  const votes = generateVotes({
    count: cli.count,
    laws: cli.laws,
    duplicateFraction: cli.dup,
    malformedFraction: cli.bad,
    seed: cli.seed,
    minDuplicateDistance: config.rabbitmqPrefetchCount,
  });

  // Several nodes (a cluster): the first that answers, in the order given.
  let connection: ChannelModel | undefined;
  for (const url of config.rabbitmqUrls) {
    try {
      connection = await amqp.connect(url, brokerSocketOptions(url, config.rabbitmqCaFile, config.connectTimeoutMs));
      break;
    } catch (error) {
      console.error(
        `publish: Cannot connect to RabbitMQ at ${redactUrl(url)}: ${(error as Error).message}. ` +
          "Is it running, and are RABBITMQ_HOST/RABBITMQ_PORT/RABBITMQ_USER (or RABBITMQ_URL) right?",
      );
    }
  }
  if (connection === undefined) return 1;
  connection.on("error", () => {});
  connection.on("blocked", (reason: string) => console.error(`publish: RabbitMQ blocks publishing: ${reason}`));
  try {
    const topology = { queue, queueType: config.rabbitmqQueueType, deliveryLimit: config.rabbitmqDeliveryLimit };
    if (await ensureTopology(connection, topology)) {
      console.error(`publish: declared ${queue} and its dead-letter queue, as the service would`);
    }
    const channel = await connection.createConfirmChannel();
    channel.on("error", () => {});
    const bar = progressBar(votes.count);
    const result = await publishVotes(channel, queue, votes.bodies, { rate: cli.rate, onProgress: bar });
    if (bar) Deno.stdout.writeSync(new TextEncoder().encode("\r\x1b[K"));
    console.log(
      cli.json
        ? JSON.stringify({
          queue,
          published: result.published,
          seconds: Number(result.seconds.toFixed(3)),
          rate: Math.round(result.rate),
          valid: votes.valid,
          duplicates: votes.duplicates,
          malformed: votes.malformed,
          malformedByKind: votes.malformedByKind,
          seed: votes.seed,
          expected: votes.expected,
        })
        : summaryLine(queue, result, votes),
    );
    return 0;
  } catch (error) {
    console.error(`publish: ${(error as Error).message}`);
    return 1;
  } finally {
    await connection.close().catch(() => {});
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
