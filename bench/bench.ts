/**
 * `deno task bench`: the service against the broker's own speed, in one run on
 * the local RabbitMQ and PostgreSQL (`TEST_RABBITMQ_URL` / `TEST_POSTGRES_URL`,
 * as for the tests; 127.0.0.1 by default). Each phase gets a fresh queue and a
 * fresh database, removed afterwards even when the phase fails.
 *
 * 1. ceiling: a bare amqplib consumer (parse JSON, acknowledge with `multiple`,
 *    the service's prefetch) drains N preloaded votes;
 * 2. drain: the real service, started as `deno task start` starts it, drains N
 *    preloaded messages (5 % duplicate attempts, 1 % malformed), timed from the
 *    process start to the last vote visible in `vote_results`; then SIGTERM, and
 *    the totals, `duplicate_attempts` and the DLQ are checked exactly;
 * 3. latency: votes published at a fixed rate to the running service; the time
 *    from each publish to the moment `vote_results` (polled every few ms)
 *    counts it. Votes are counted in publishing order, so the visible total
 *    maps to the vote indexes. With several batches committing at once the
 *    mapping is approximate to within a batch;
 * 4. peak RSS (VmHWM) of the service process, after the drain and, with
 *    `--backlog N`, while draining a backlog of N messages.
 *
 * Prints one markdown table and the command line that produced it.
 *
 * @module
 */

import amqp from "amqplib";
import { isDeepStrictEqual, parseArgs } from "node:util";
import { ConfigError, loadConfig, VARIABLE_NAMES, VARIABLES } from "../lib/config.ts";
import { createTestDatabase, createTestQueue, RABBITMQ_URL, results, type TestQueue } from "../tests/helpers.ts";
import { freePort } from "../tests/service_process.ts";
import { type GeneratedVotes, generateVotes, publishVotes } from "../tools/publish.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DUPLICATE_FRACTION = 0.05;
const MALFORMED_FRACTION = 0.01;
const POLL_MS = 5;

const USAGE = `Usage: deno task bench [options]

  -n N                 messages for the ceiling and drain phases (default 200000)
      --rate R         latency phase: votes per second (default 1000)
      --seconds S      latency phase: how long to publish (default 30)
      --timeouts LIST  latency phase: BATCH_TIMEOUT_SECONDS values, comma-separated (default 1.0,0.1)
      --backlog N      also drain a backlog of N messages and report its peak RSS (default: skipped)
      --batch-size N   BATCH_SIZE for the service (default: the service's default)
      --prefetch N     RABBITMQ_PREFETCH_COUNT for the service and the bare consumer (default: the service's)
      --inflight N     MAX_INFLIGHT_BATCHES for the service (default: the service's)
      --laws N         laws the votes are spread over (default 5)
      --skip-ceiling, --skip-drain, --skip-latency
      --phase-timeout S  longest any phase may take, preloading included (default 900)
  -h, --help`;

interface Options {
  n: number;
  rate: number;
  seconds: number;
  timeouts: string[];
  backlog: number;
  laws: number;
  batchSize: number;
  prefetch: number;
  inflight: number;
  skipCeiling: boolean;
  skipDrain: boolean;
  skipLatency: boolean;
  phaseTimeoutMs: number;
}

/** One row of the table. */
interface Row {
  phase: string;
  n: number;
  seconds?: number;
  rate?: number;
  p50?: number;
  p99?: number;
  max?: number;
  rssMb?: number;
  /** Undefined when the phase has nothing to check (the ceiling). */
  exact?: boolean;
  notes: string[];
}

class UsageError extends Error {}

function parseOptions(args: string[]): Options | undefined {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        n: { type: "string", short: "n" },
        rate: { type: "string" },
        seconds: { type: "string" },
        timeouts: { type: "string" },
        backlog: { type: "string" },
        laws: { type: "string" },
        "batch-size": { type: "string" },
        prefetch: { type: "string" },
        inflight: { type: "string" },
        "skip-ceiling": { type: "boolean", default: false },
        "skip-drain": { type: "boolean", default: false },
        "skip-latency": { type: "boolean", default: false },
        "phase-timeout": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return undefined;
  const positive = (flag: string, value: string | undefined, fallback: number, integer = true) => {
    if (value === undefined) return fallback;
    const n = Number(value);
    if (value.trim() === "" || !(n > 0) || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
      throw new UsageError(
        `--${flag} must be a positive ${integer ? "integer" : "number"}: current value is "${value}"`,
      );
    }
    return n;
  };
  // The service's own rules and defaults, so the bench can neither pass what the service refuses nor drift from it.
  let config;
  try {
    config = loadConfig({
      BATCH_SIZE: values["batch-size"],
      RABBITMQ_PREFETCH_COUNT: values.prefetch,
      MAX_INFLIGHT_BATCHES: values.inflight,
    });
  } catch (error) {
    if (error instanceof ConfigError) {
      const flag = { BATCH_SIZE: "--batch-size", RABBITMQ_PREFETCH_COUNT: "--prefetch" }[error.variable] ??
        "--inflight";
      throw new UsageError(`${flag}: ${error.message}`);
    }
    throw error;
  }
  const timeouts = (values.timeouts ?? "1.0,0.1").split(",").map((t) => t.trim());
  for (const t of timeouts) {
    try {
      loadConfig({ BATCH_TIMEOUT_SECONDS: t });
    } catch (error) {
      throw new UsageError(`--timeouts: ${(error as Error).message}`);
    }
  }
  return {
    n: positive("n", values.n, 200_000),
    rate: positive("rate", values.rate, 1000, false),
    seconds: positive("seconds", values.seconds, 30, false),
    timeouts,
    backlog: values.backlog === undefined ? 0 : positive("backlog", values.backlog, 0),
    laws: positive("laws", values.laws, 5),
    batchSize: config.batchSize,
    prefetch: config.rabbitmqPrefetchCount,
    inflight: config.maxInflightBatches,
    skipCeiling: values["skip-ceiling"],
    skipDrain: values["skip-drain"],
    skipLatency: values["skip-latency"],
    phaseTimeoutMs: positive("phase-timeout", values["phase-timeout"], 900, false) * 1000,
  };
}

// --- progress on stderr -------------------------------------------------------------------------

const encoder = new TextEncoder();
const stderrIsTerminal = Deno.stderr.isTerminal();
let lastProgressLine = 0;

/** A progress line: rewritten in place on a terminal, every 5 s otherwise (CI logs stay short). */
function progress(text: string, force = false): void {
  const now = performance.now();
  if (stderrIsTerminal) {
    Deno.stderr.writeSync(encoder.encode(`\r\x1b[K${text}`));
  } else if (force || now - lastProgressLine >= 5000) {
    Deno.stderr.writeSync(encoder.encode(`${text}\n`));
    lastProgressLine = now;
  }
}

function say(text: string): void {
  if (stderrIsTerminal) Deno.stderr.writeSync(encoder.encode("\r\x1b[K"));
  console.error(text);
}

// --- the service as a process -------------------------------------------------------------------

/** How the service is started: through `deno task start` when its launcher exists, as the deployment does. */
const LAUNCHER = await Deno.stat(`${ROOT}tools/start.ts`).then(() => true, () => false);
const START_COMMAND = LAUNCHER
  ? ["task", "--quiet", "start"]
  : ["run", "--quiet", "--allow-net", "--allow-env", "--allow-read=.env", "main.ts"];

interface RunningService extends AsyncDisposable {
  /** The process running main.ts (not the task runner or launcher around it). */
  pid: number;
  startedAt: number;
  /** Last lines it printed, for failure reports. */
  tail(): string;
  /** Its exit code once it has exited. */
  readonly exitCode: number | undefined;
  /** SIGTERM, then the exit code; SIGKILL after `graceMs`. */
  stop(graceMs: number): Promise<number>;
  exited: Promise<number>;
}

/** Pids of every descendant of `root`, deepest last. */
function descendants(root: number): number[] {
  const parent = new Map<number, number[]>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      // Field 4 of /proc/<pid>/stat, after the parenthesized command (which may hold spaces).
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = parent.get(ppid) ?? [];
      list.push(Number(entry.name));
      parent.set(ppid, list);
    } catch { /* gone meanwhile */ }
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length) {
    for (const child of parent.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

function commandLine(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/** Peak resident set size of `pid` in MB (VmHWM), or undefined once it is gone. */
function peakRssMb(pid: number): number | undefined {
  try {
    const match = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^VmHWM:\s+(\d+) kB/m);
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

async function spawnService(env: Record<string, string>, signal: AbortSignal): Promise<RunningService> {
  const inherited = Deno.env.toObject();
  // The service's variables come from the bench alone (and .env for what the bench leaves unset).
  for (const name of VARIABLE_NAMES) delete inherited[name];
  const startedAt = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: START_COMMAND,
    cwd: ROOT,
    env: { ...inherited, ...env },
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      lines.push(...text.split("\n").filter(Boolean));
      if (lines.length > 200) lines.splice(0, lines.length - 200);
    }
  };
  const drained = Promise.all([collect(child.stdout), collect(child.stderr)]);
  let done = false;
  let exitCode: number | undefined;
  const exited = child.status.then(async (status) => {
    done = true;
    await drained;
    return exitCode = status.code;
  });
  const tail = () => lines.slice(-40).join("\n");
  const killAll = () => {
    for (const pid of [...descendants(child.pid).reverse(), child.pid]) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  };

  let pid = child.pid;
  if (LAUNCHER) {
    // deno task → launcher → deno run main.ts: the service is the process whose command runs main.ts.
    const deadline = performance.now() + 30_000;
    for (;;) {
      const service = descendants(child.pid).find((p) => /\bmain\.ts\b/.test(commandLine(p)));
      if (service) {
        pid = service;
        break;
      }
      if (done || performance.now() > deadline || signal.aborted) {
        killAll();
        throw new Error(`The service did not start (exit code ${done ? await exited : "none"}):\n${tail()}`);
      }
      await sleep(10);
    }
  }
  return {
    pid,
    startedAt,
    tail,
    exited,
    get exitCode() {
      return exitCode;
    },
    async stop(graceMs) {
      if (!done) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const code = await Promise.race([
        exited,
        new Promise<number>((resolve) => timer = setTimeout(() => resolve(-1), graceMs)),
      ]);
      clearTimeout(timer);
      if (code === -1) {
        killAll();
        throw new Error(`The service did not stop within ${graceMs} ms of SIGTERM; killed it:\n${tail()}`);
      }
      return code;
    },
    async [Symbol.asyncDispose]() {
      if (!done) {
        killAll();
        await exited;
      }
    },
  };
}

// --- measuring ----------------------------------------------------------------------------------

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Votes counted in `vote_results`; 0 before the service created the table. */
async function visibleVotes(sql: Awaited<ReturnType<typeof createTestDatabase>>["sql"]): Promise<number> {
  try {
    const [{ n }] = await sql`select coalesce(sum(oui_count + non_count), 0)::int8 as n from vote_results`;
    return Number(n);
  } catch (error) {
    if ((error as { code?: string }).code === "42P01") return 0;
    throw error;
  }
}

async function preload(queue: TestQueue, votes: GeneratedVotes, label: string, signal: AbortSignal): Promise<void> {
  const result = await publishVotes(queue.channel, queue.name, votes.bodies, {
    signal,
    onProgress: (n) => progress(`${label}: preloading ${n}/${votes.count}`),
  });
  say(
    `${label}: preloaded ${result.published} messages in ${result.seconds.toFixed(1)} s (${Math.round(result.rate)}/s)`,
  );
}

function serviceEnv(options: Options, db: { url: string }, queue: TestQueue, extra: Record<string, string> = {}) {
  return {
    RABBITMQ_URL,
    RABBITMQ_QUEUE: queue.name,
    DATABASE_URL: db.url,
    PROMETHEUS_PORT: String(freePort()),
    HTTP_HOST: "127.0.0.1",
    LOG_LEVEL: "INFO",
    BATCH_SIZE: String(options.batchSize),
    RABBITMQ_PREFETCH_COUNT: String(options.prefetch),
    MAX_INFLIGHT_BATCHES: String(options.inflight),
    ...extra,
  };
}

const SHUTDOWN_GRACE_MS = 60_000;

/** The generator's expected totals in the shape of the tests' `results()`: `{law: [oui, non]}`. */
function expectedResults(votes: GeneratedVotes): Record<string, [number, number]> {
  return Object.fromEntries(Object.entries(votes.expected).map(([law, t]) => [law, [t.oui, t.non]]));
}

async function ceiling(options: Options, n: number, signal: AbortSignal): Promise<Row> {
  const label = "ceiling";
  await using queue = await createTestQueue();
  await preload(queue, generateVotes({ count: n, laws: options.laws }), label, signal);
  // Half the prefetch keeps deliveries flowing while an acknowledgement is on its way; never more than a batch.
  const ackEvery = Math.max(1, Math.min(options.batchSize, Math.floor(options.prefetch / 2)));
  const connection = await amqp.connect(RABBITMQ_URL);
  try {
    const channel = await connection.createChannel();
    await channel.prefetch(options.prefetch);
    const decoder = new TextDecoder();
    const done = Promise.withResolvers<number>();
    let received = 0;
    let parsed = 0;
    const start = performance.now();
    await channel.consume(queue.name, (message) => {
      if (message === null) return done.reject(new Error("the broker cancelled the bare consumer"));
      if (JSON.parse(decoder.decode(message.content)).vote_hash) parsed += 1;
      received += 1;
      if (received % ackEvery === 0 || received === n) channel.ack(message, true);
      if (received === n) done.resolve(performance.now());
      else if (received % 10_000 === 0) progress(`${label}: ${received}/${n}`);
    });
    const abort = () => done.reject(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    const end = await done.promise.finally(() => signal.removeEventListener("abort", abort));
    const seconds = (end - start) / 1000;
    say(
      `${label}: ${n} messages in ${seconds.toFixed(2)} s (${
        Math.round(n / seconds)
      }/s), acknowledging every ${ackEvery}`,
    );
    if (parsed !== n) throw new Error(`the bare consumer parsed ${parsed} votes of ${n}`);
    return { phase: "ceiling (bare amqplib consumer)", n, seconds, rate: n / seconds, notes: [] };
  } finally {
    await connection.close().catch(() => {});
  }
}

async function drain(options: Options, n: number, label: string, signal: AbortSignal): Promise<Row> {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const votes = generateVotes({
    count: n,
    laws: options.laws,
    duplicateFraction: DUPLICATE_FRACTION,
    malformedFraction: MALFORMED_FRACTION,
    minDuplicateDistance: options.prefetch,
  });
  await preload(queue, votes, label, signal);

  await using service = await spawnService(serviceEnv(options, db, queue), signal);
  let firstVisibleAt: number | undefined;
  let visible = 0;
  let peakRss = 0;
  while (visible < votes.valid) {
    signal.throwIfAborted();
    visible = await visibleVotes(db.sql);
    const now = performance.now();
    if (visible > 0) firstVisibleAt ??= now;
    peakRss = Math.max(peakRss, peakRssMb(service.pid) ?? 0);
    const rate = visible / Math.max(0.001, (now - service.startedAt) / 1000);
    progress(
      `${label}: ${visible}/${votes.valid} votes visible, ${Math.round(rate)}/s, RSS peak ${peakRss.toFixed(0)} MB`,
    );
    if (visible >= votes.valid) break;
    if (service.exitCode !== undefined) {
      throw new Error(`the service exited with ${service.exitCode} before counting every vote:\n${service.tail()}`);
    }
    await sleep(20, signal);
  }
  const lastVisibleAt = performance.now();
  peakRss = Math.max(peakRss, peakRssMb(service.pid) ?? 0);
  const code = await service.stop(SHUTDOWN_GRACE_MS);

  const notes: string[] = [];
  const actual = await results(db.sql);
  const expected = expectedResults(votes);
  if (!isDeepStrictEqual(actual, expected)) {
    notes.push(`vote_results ${JSON.stringify(actual)} but expected ${JSON.stringify(expected)}`);
  }
  const [{ duplicates }] = await db.sql`select count(*)::int as duplicates from duplicate_attempts`;
  if (duplicates !== votes.duplicates) {
    notes.push(`duplicate_attempts has ${duplicates} rows, ${votes.duplicates} sent`);
  }
  const deadLettered = await queue.count(queue.dlq);
  if (deadLettered !== votes.malformed) notes.push(`the DLQ holds ${deadLettered} messages, ${votes.malformed} sent`);
  const left = await queue.count();
  if (left !== 0) notes.push(`${left} messages left unacknowledged in the queue`);
  if (code !== 0) notes.push(`exit code ${code} after SIGTERM:\n${service.tail()}`);
  const seconds = (lastVisibleAt - service.startedAt) / 1000;
  const steady = (lastVisibleAt - (firstVisibleAt ?? lastVisibleAt)) / 1000;
  say(
    `${label}: ${n} messages in ${seconds.toFixed(2)} s from process start (${Math.round(n / seconds)}/s); ` +
      `first vote visible after ${((firstVisibleAt! - service.startedAt) / 1000).toFixed(2)} s, ` +
      `then ${steady > 0 ? Math.round(votes.valid / steady) : "∞"} votes/s; peak RSS ${
        peakRss.toFixed(0)
      } MB; exit ${code}`,
  );
  for (const note of notes) say(`${label}: NOT EXACT: ${note}`);
  return {
    phase: label,
    n,
    seconds,
    rate: n / seconds,
    rssMb: peakRss,
    exact: notes.length === 0,
    notes: [
      `${label}: ${votes.valid} valid, ${votes.duplicates} duplicate, ${votes.malformed} malformed; startup (spawn → first vote visible) ${
        ((firstVisibleAt! - service.startedAt) / 1000).toFixed(2)
      } s`,
      ...notes,
    ],
  };
}

async function latency(options: Options, timeout: string, signal: AbortSignal): Promise<Row> {
  const label = `latency ${options.rate}/s, BATCH_TIMEOUT_SECONDS=${timeout}`;
  const count = Math.round(options.rate * options.seconds);
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  await using service = await spawnService(serviceEnv(options, db, queue, { BATCH_TIMEOUT_SECONDS: timeout }), signal);
  // Publishing starts once the service consumes, so start-up is not counted as latency.
  while ((await queue.channel.checkQueue(queue.name)).consumerCount === 0) {
    if (service.exitCode !== undefined) {
      throw new Error(`the service exited with ${service.exitCode} before consuming:\n${service.tail()}`);
    }
    await sleep(20, signal);
  }

  const votes = generateVotes({ count, laws: options.laws });
  const sentAt = new Float64Array(count);
  const latencies = new Float64Array(count);
  let publishing = true;
  let publishError: unknown;
  const published = publishVotes(queue.channel, queue.name, votes.bodies, {
    rate: options.rate,
    signal,
    onSent: (i, time) => sentAt[i] = time,
  }).finally(() => publishing = false);
  published.catch((error) => publishError = error);

  let visible = 0;
  const deadline = performance.now() + options.seconds * 1000 + 60_000;
  while (visible < count) {
    signal.throwIfAborted();
    if (publishError) throw publishError;
    if (performance.now() > deadline) {
      throw new Error(`only ${visible} of ${count} votes visible a minute after the last publish`);
    }
    const now = await visibleVotes(db.sql).then((n) => {
      const at = performance.now();
      // Counted in publishing order: the votes that just became visible are the next ones published.
      for (let i = visible; i < Math.min(n, count); i++) latencies[i] = at - sentAt[i];
      visible = Math.max(visible, n);
      return at;
    });
    progress(`${label}: ${visible}/${count} visible${publishing ? ", publishing" : ""}`);
    await sleep(Math.max(0, POLL_MS - (performance.now() - now)), signal);
  }
  const result = await published;
  const rssMb = peakRssMb(service.pid);
  const code = await service.stop(SHUTDOWN_GRACE_MS);
  const actual = await results(db.sql);
  const expected = expectedResults(votes);
  const notes: string[] = [];
  if (!isDeepStrictEqual(actual, expected)) {
    notes.push(`vote_results ${JSON.stringify(actual)} but expected ${JSON.stringify(expected)}`);
  }
  if (code !== 0) notes.push(`exit code ${code} after SIGTERM:\n${service.tail()}`);
  if (Math.abs(result.rate - options.rate) > options.rate * 0.05) {
    notes.push(
      `published at ${Math.round(result.rate)}/s, not ${options.rate}/s: the publisher could not keep the pace`,
    );
  }
  latencies.sort();
  const pick = (q: number) => latencies[Math.min(count - 1, Math.max(0, Math.ceil(q * count) - 1))];
  const row: Row = {
    phase: label,
    n: count,
    seconds: result.seconds,
    rate: result.rate,
    p50: pick(0.5),
    p99: pick(0.99),
    max: latencies[count - 1],
    rssMb,
    exact: notes.length === 0,
    notes,
  };
  say(
    `${label}: p50 ${row.p50!.toFixed(0)} ms, p99 ${row.p99!.toFixed(0)} ms, max ${
      row.max!.toFixed(0)
    } ms; exit ${code}`,
  );
  for (const note of notes) say(`${label}: ${note}`);
  return row;
}

/** The error's message; with `await using`, also what failed while cleaning up after it. */
function describe(error: unknown): string {
  if (error instanceof SuppressedError) {
    return `${describe(error.suppressed)} (and then, cleaning up: ${describe(error.error)})`;
  }
  return error instanceof Error ? error.message : String(error);
}

// --- the table ----------------------------------------------------------------------------------

function table(rows: Row[], ceilingRate: number | undefined): string {
  const fixed = (n: number | undefined, digits = 0) =>
    n === undefined ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const lines = [
    "| phase | N | seconds | votes/s | ratio to ceiling | p50 ms | p99 ms | max ms | peak RSS MB | exact |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
  ];
  for (const r of rows) {
    const ratio = r.rate !== undefined && ceilingRate && r.p50 === undefined && !r.phase.startsWith("ceiling")
      ? `${(100 * r.rate / ceilingRate).toFixed(0)} %`
      : "—";
    const exact = r.exact === undefined ? "—" : r.exact ? "yes" : "**no**";
    lines.push(
      `| ${r.phase} | ${fixed(r.n)} | ${fixed(r.seconds, 2)} | ${fixed(r.rate)} | ${ratio} | ${fixed(r.p50)} | ${
        fixed(r.p99)
      } | ${fixed(r.max)} | ${fixed(r.rssMb)} | ${exact} |`,
    );
  }
  return lines.join("\n");
}

async function main(args: string[]): Promise<number> {
  let options: Options | undefined;
  try {
    options = parseOptions(args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`bench: ${error.message} (see --help)`);
    return 2;
  }
  if (options === undefined) {
    console.log(USAGE);
    return 0;
  }

  const interrupted = new AbortController();
  let signals = 0;
  for (const name of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(name, () => {
      // The first signal cleans up (queues, databases, the service); a second one leaves at once.
      if (++signals > 1) Deno.exit(130);
      say(`bench: ${name}: stopping and cleaning up (again to quit at once)`);
      interrupted.abort(new Error(`interrupted by ${name}`));
    });
  }

  const settings =
    `BATCH_SIZE=${options.batchSize} RABBITMQ_PREFETCH_COUNT=${options.prefetch} MAX_INFLIGHT_BATCHES=${options.inflight}`;
  say(`bench: ${settings}; service started with \`deno ${START_COMMAND.join(" ")}\``);
  // A dropped broker or database connection surfaces as an 'error' event no one listens to (amqplib
  // emits it on the connection): it fails the phase under way, which then cleans up, instead of the bench.
  let lost: AbortController | undefined;
  const onLost = (event: ErrorEvent | PromiseRejectionEvent) => {
    event.preventDefault();
    const error = "error" in event ? event.error : event.reason;
    lost?.abort(new Error(`${describe(error)} (was RabbitMQ or PostgreSQL restarted? run the bench again)`));
  };
  globalThis.addEventListener("error", onLost);
  globalThis.addEventListener("unhandledrejection", onLost);

  const rows: Row[] = [];
  let failed = false;
  const phase = async (name: string, run: (signal: AbortSignal) => Promise<Row>) => {
    if (interrupted.signal.aborted) return;
    lost = new AbortController();
    const timeout = AbortSignal.timeout(options.phaseTimeoutMs);
    const signal = AbortSignal.any([interrupted.signal, lost.signal, timeout]);
    try {
      rows.push(await run(signal));
    } catch (error) {
      failed = true;
      const reason = timeout.aborted
        ? `took longer than --phase-timeout ${options.phaseTimeoutMs / 1000} s`
        : lost.signal.aborted
        ? describe(lost.signal.reason)
        : describe(error);
      say(`bench: ${name} FAILED: ${reason}`);
      rows.push({ phase: `${name} (FAILED)`, n: 0, exact: false, notes: [`${name}: ${reason}`] });
    }
  };

  if (!options.skipCeiling) await phase("ceiling", (s) => ceiling(options, options.n, s));
  if (!options.skipDrain) {
    await phase("service drain", (s) => drain(options, options.n, "service drain (5 % dup, 1 % bad)", s));
  }
  if (!options.skipLatency) {
    for (const timeout of options.timeouts) await phase(`latency ${timeout}`, (s) => latency(options, timeout, s));
  }
  if (options.backlog > 0) {
    await phase("backlog", (s) => drain(options, options.backlog, "backlog (5 % dup, 1 % bad)", s));
  }

  const ceilingRate = rows.find((r) => r.phase.startsWith("ceiling") && r.rate)?.rate;
  const command = ["deno", "task", "bench", ...args].join(" ");
  console.log(
    [
      "",
      `\`${command}\` — ${settings}, BATCH_TIMEOUT_SECONDS=${VARIABLES.BATCH_TIMEOUT_SECONDS.default} ` +
      `unless stated; service run as \`deno ${START_COMMAND.join(" ")}\`; ${navigator.hardwareConcurrency} CPUs`,
      "",
      table(rows, ceilingRate),
      "",
      ...rows.flatMap((r) => r.notes).map((note) => `- ${note}`),
    ].join("\n"),
  );
  return failed || rows.some((r) => r.exact === false) ? 1 : 0;
}

Deno.exit(await main(Deno.args));
