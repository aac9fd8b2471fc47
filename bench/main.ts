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
 *    `--backlog N`, while draining a backlog of N messages;
 * 5. subscribers: the drain with no results stream open and with
 *    `--subscribers N` (default 1,000) open, and the commit → event latency
 *    (`subscribers.ts`).

 * 6. scaling (`--scaling 1,2,3,6`): K instances on one queue and one database
 *    (`scaling.ts`): drain rate, service CPU per message, PostgreSQL lock waits.
 * 7. viewers (`--viewers N`): the drain unwatched and watched by N viewers
 *    polling a results-only instance through nginx with the shipped
 *    deploy/nginx/results.conf (`viewers.ts`): requests per second nginx
 *    served, requests that reached the service, staleness, drain rate.
 *
 * Beside them, on request: `--counting N` (the counting statement alone, its
 * backend's CPU per vote, `counting.ts`), `--ledger` (`ledger.ts`), `--standbys` (the cost of
 * `POSTGRES_MIN_STANDBYS`, `standbys.ts`), `--recount N` (`recount.ts`), `--election N` (`election.ts`),
 * `--recovery S` (readiness and counting after outages of S seconds behind proxies, `POST /pause` during one:
 * `recovery.ts`).
 *
 * Prints one markdown table and the command line that produced it. One file
 * per phase: `ceiling.ts`, `drain.ts`, `latency.ts`, `subscribers.ts`, `scaling.ts`, …; `report.ts` prints.
 *
 * @module
 */

import { numberFlag, parseFlags, UsageError } from "../lib/config/cli.ts";
import { ConfigError, loadConfig } from "../lib/config/config.ts";
import { VARIABLES } from "../lib/config/variables.ts";
import { ceiling } from "./ceiling.ts";
import type { Options } from "./common.ts";
import { drain } from "./drain.ts";
import { election } from "./election.ts";
import { latency } from "./latency.ts";
import { subscribers } from "./subscribers.ts";
import { viewers } from "./viewers.ts";
import { ledgerCost } from "./ledger.ts";
import { recountRate } from "./recount.ts";
import { recovery } from "./recovery.ts";
import { counting } from "./counting.ts";
import { scaling } from "./scaling.ts";
import { standbys } from "./standbys.ts";
import { describe, type Row, say, table } from "./report.ts";

/** How the drain and latency phases start the service: as operators do. */
const START_COMMAND = ["task", "--quiet", "start"];

const USAGE = `Usage: deno task bench [options]

  -n N                 messages for the ceiling and drain phases (default 200000)
      --rate R         latency phase: votes per second (default 1000)
      --seconds S      latency phase: how long to publish (default 30)
      --timeouts LIST  latency phase: BATCH_TIMEOUT_SECONDS values, comma-separated (default 1.0,0.1)
      --backlog N      also drain a backlog of N messages and report its peak RSS (default: skipped)
      --election N     also drain N messages published in chunks while draining, e.g. 8000000 with --laws 20:
                       not for CI, nor for a shared machine (default: skipped; see election.ts)
      --chunk N        election: messages per chunk; the next is published once the queue holds less (default 500000)
      --batch-size N   BATCH_SIZE for the service (default: the service's default)
      --prefetch N     RABBITMQ_PREFETCH_COUNT for the service and the bare consumer (default: the service's)
      --inflight N     MAX_INFLIGHT_BATCHES for the service (default: the service's)
      --prepare P      POSTGRES_PREPARE for the service: auto, true or false (default: the service's)
      --laws N         laws the votes are spread over (default 5)
      --scaling LIST   also drain -n messages with each instance count in LIST (e.g. 1,2,3,6), one queue and database
      --subscribers N  results stream subscribers while draining, against none (default 1000; 0 skips)
      --event-interval MS  RESULTS_EVENT_INTERVAL_MS for the subscribers phase (default: the service's)
      --viewers N      also drain with N viewers polling a results-only instance through nginx, against none
                       (at most 32: the shipped limit_conn per address; default: skipped; see viewers.ts)
      --viewer-interval MS  viewers phase: each viewer's pause between an answer and its next request (default 0)
      --skip-ceiling, --skip-drain, --skip-latency
      --recount N      also time verify on a database of N counted votes built for it (recount.ts)
      --recovery S     also time readiness, POST /pause and counting after broker and database outages of S seconds
                       behind proxies (recovery.ts)
      --counting N     also the counting statement alone: N votes on one connection, its backend's CPU (counting.ts)
      --ledger         also measure the batch ledger's cost: N votes committed with and without it (ledger.ts)
      --standbys       also the drain and latency on a private primary with a standby, POSTGRES_MIN_STANDBYS=0 and 1
                       (standbys.ts)
      --phase-timeout S  longest any phase may take, preloading included (default 900)
  -h, --help`;

function parseOptions(args: string[]): Options | undefined {
  const values = parseFlags(args, {
    n: { type: "string", short: "n" },
    rate: { type: "string" },
    seconds: { type: "string" },
    timeouts: { type: "string" },
    backlog: { type: "string" },
    election: { type: "string" },
    chunk: { type: "string" },
    laws: { type: "string" },
    "batch-size": { type: "string" },
    prefetch: { type: "string" },
    inflight: { type: "string" },
    scaling: { type: "string" },
    prepare: { type: "string" },
    subscribers: { type: "string" },
    "event-interval": { type: "string" },
    viewers: { type: "string" },
    "viewer-interval": { type: "string" },
    "skip-ceiling": { type: "boolean", default: false },
    "skip-drain": { type: "boolean", default: false },
    "skip-latency": { type: "boolean", default: false },
    ledger: { type: "boolean", default: false },
    standbys: { type: "boolean", default: false },
    recount: { type: "string" },
    recovery: { type: "string" },
    counting: { type: "string" },
    "phase-timeout": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  if (values.help) return undefined;
  const positive = (flag: string, value: string | undefined, fallback: number, integer = true) =>
    numberFlag(
      flag,
      value,
      (n) => n > 0 && Number.isFinite(n) && (!integer || Number.isInteger(n)),
      `a positive ${integer ? "integer" : "number"}`,
    ) ?? fallback;
  // The service's own rules and defaults, so the bench can neither pass what the service refuses nor drift from it.
  let config;
  try {
    config = loadConfig({
      BATCH_SIZE: values["batch-size"],
      RABBITMQ_PREFETCH_COUNT: values.prefetch,
      MAX_INFLIGHT_BATCHES: values.inflight,
      POSTGRES_PREPARE: values.prepare,
      RESULTS_EVENT_INTERVAL_MS: values["event-interval"],
    });
  } catch (error) {
    if (error instanceof ConfigError) {
      const flag = {
        BATCH_SIZE: "--batch-size",
        RABBITMQ_PREFETCH_COUNT: "--prefetch",
        POSTGRES_PREPARE: "--prepare",
        RESULTS_EVENT_INTERVAL_MS: "--event-interval",
      }[error.variable] ??
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
    election: values.election === undefined ? 0 : positive("election", values.election, 0),
    chunk: positive("chunk", values.chunk, 500_000),
    laws: positive("laws", values.laws, 5),
    batchSize: config.batchSize,
    prefetch: config.rabbitmqPrefetchCount,
    inflight: config.maxInflightBatches,
    prepare: config.postgresPrepare,
    eventIntervalMs: config.resultsEventIntervalMs,
    skipCeiling: values["skip-ceiling"],
    skipDrain: values["skip-drain"],
    skipLatency: values["skip-latency"],
    subscribers: values.subscribers === "0" ? 0 : positive("subscribers", values.subscribers, 1000),
    viewers: values.viewers === undefined ? 0 : positive("viewers", values.viewers, 0),
    viewerIntervalMs: values["viewer-interval"] === "0" ? 0 : positive("viewer-interval", values["viewer-interval"], 0),
    ledger: values.ledger,
    standbys: values.standbys,
    recount: values.recount === undefined ? 0 : positive("recount", values.recount, 0),
    recovery: values.recovery === undefined ? 0 : positive("recovery", values.recovery, 0, false),
    counting: values.counting === undefined ? 0 : positive("counting", values.counting, 0),
    phaseTimeoutMs: positive("phase-timeout", values["phase-timeout"], 900, false) * 1000,
    scaling: values.scaling === undefined ? [] : values.scaling.split(",").map((k) => positive("scaling", k.trim(), 1)),
  };
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
    `BATCH_SIZE=${options.batchSize} RABBITMQ_PREFETCH_COUNT=${options.prefetch} MAX_INFLIGHT_BATCHES=${options.inflight} ` +
    `POSTGRES_PREPARE=${options.prepare}`;
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
  /** Runs one phase, within its timeout; its row or rows (one phase may measure several) go into the table. */
  const phase = async (name: string, run: (signal: AbortSignal) => Promise<Row | Row[]>) => {
    if (interrupted.signal.aborted) return;
    lost = new AbortController();
    const timeout = AbortSignal.timeout(options.phaseTimeoutMs);
    const signal = AbortSignal.any([interrupted.signal, lost.signal, timeout]);
    try {
      rows.push(...[await run(signal)].flat());
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
  if (options.subscribers > 0) await phase("subscribers", (s) => subscribers(options, s));
  if (options.viewers > 0) await phase("viewers", (s) => viewers(options, s));
  if (options.ledger) await phase("ledger cost", (s) => ledgerCost(options, options.n, s));
  if (options.standbys) await phase("standbys", (s) => standbys(options, s));
  if (options.counting > 0) await phase("counting", (s) => counting(options, options.counting, s));
  if (options.recount > 0) await phase("recount", (s) => recountRate(options, options.recount, s));
  if (options.recovery > 0) await phase("recovery", (s) => recovery(options, options.recovery, s));
  if (options.backlog > 0) {
    await phase("backlog", (s) => drain(options, options.backlog, "backlog (5 % dup, 1 % bad)", s));
  }
  if (options.election > 0) await phase("election", (s) => election(options, s));

  for (const instances of options.scaling) {
    await phase(`scaling ${instances}`, (s) => scaling(options, instances, options.n, s));
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
