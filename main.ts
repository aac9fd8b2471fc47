/**
 * The vote aggregator: consumes validated votes from RabbitMQ, commits exact
 * per-law totals to PostgreSQL, and serves its control plane over HTTP.
 *
 * Reads `.env` and the environment (see `lib/config/config.ts`), starts the service,
 * and on SIGINT or SIGTERM stops it, in any phase. Exit codes:
 *
 * - 0: stopped with nothing left in flight — a signal during start-up
 *   (connecting, migrating: nothing was consumed), or a drain that committed
 *   and acknowledged everything received;
 * - 1: the start failed (a server refused it, or `STARTUP_TIMEOUT_SECONDS`
 *   passed while waiting for one), or the drain did not finish within
 *   `SHUTDOWN_TIMEOUT_SECONDS` (plus 5 s per closing step), or a second signal
 *   stopped it at once after it began consuming (what was not acknowledged is
 *   redelivered);
 * - 2: a bad configuration.
 *
 * One stop request may arrive as several signals: a signal sent to the process
 * group reaches `deno task`, the launcher (tools/start.ts) and this process,
 * and each of the first two passes it on. Signals within
 * {@link REPEAT_SIGNAL_MS} of the first are that same request; only a later one
 * is a second request, which stops at once.
 *
 * `vote-aggregator --version` prints the version (lib/version.ts).
 * `vote-aggregator verify …` and `vote-aggregator dead-letters …` run the
 * operator's tools instead (lib/audit/command.ts, lib/dead_letters/command.ts),
 * under the same permission set; `vote-aggregator results` runs a results-only
 * instance (lib/results/command.ts), under its own (`deno task results`).
 *
 * @module
 */

import { verifyCommand } from "./lib/audit/command.ts";
import { loadConfigOrExit } from "./lib/config/cli.ts";
import { deadLettersCommand } from "./lib/dead_letters/command.ts";
import { resultsCommand } from "./lib/results/command.ts";
import { getLogger, setupLogging } from "./lib/log.ts";
import { deniedEndpoints } from "./lib/config/permissions.ts";
import { AbortedError } from "./lib/retry.ts";
import { type Service, type StartPhase, startService } from "./lib/service.ts";
import { delay, withTimeout } from "./lib/timeout.ts";
import { VERSION } from "./lib/version.ts";

/** Signals this close to the first are copies of the same stop request, not a second one. */
const REPEAT_SIGNAL_MS = 1000;
/** Longest start-up may take to unwind after a signal before the process exits anyway. */
const STARTUP_UNWIND_MS = 5000;
/** Longest the closing steps may add to `SHUTDOWN_TIMEOUT_SECONDS` (broker, pool, HTTP server: 5 s each). */
const CLOSE_GRACE_MS = 16_000;

const SUBCOMMANDS: Record<string, (args: string[], program: string) => Promise<number>> = {
  verify: verifyCommand,
  "dead-letters": deadLettersCommand,
  results: resultsCommand,
};

async function main(): Promise<number> {
  const [subcommand, ...args] = Deno.args;
  if (subcommand === "--version" || subcommand === "-V") {
    console.log(`vote-aggregator ${VERSION}`);
    return 0;
  }
  if (subcommand !== undefined && Object.hasOwn(SUBCOMMANDS, subcommand)) {
    return await SUBCOMMANDS[subcommand](args, `vote-aggregator ${subcommand}`);
  }
  const config = await loadConfigOrExit("vote-aggregator");
  // Fail at once, naming the host, rather than as "getaddrinfo EPERM" from inside a client's retries.
  const denied = deniedEndpoints(config);
  if (denied.length) {
    for (const reason of denied) console.error(`vote-aggregator: ${reason}`);
    return 2;
  }
  await setupLogging(config.logLevel, config.logFormat);
  const log = getLogger("main");

  // Listening before anything else: a signal in any phase is honoured.
  const stopping = new AbortController();
  const signal = Promise.withResolvers<string>();
  let phase: StartPhase | "consuming" | "draining" = "connecting to PostgreSQL";
  let firstSignalAt = 0;
  for (const name of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(name, () => {
      if (!stopping.signal.aborted) {
        firstSignalAt = performance.now();
        stopping.abort();
        return signal.resolve(name);
      }
      if (performance.now() - firstSignalAt < REPEAT_SIGNAL_MS) {
        log.debug("{signal} again within {ms} ms: the same stop request", { signal: name, ms: REPEAT_SIGNAL_MS });
        return;
      }
      const code = phase === "consuming" || phase === "draining" ? 1 : 0;
      log.error("{signal} again while {phase}: exiting now with {code}", { signal: name, phase, code });
      Deno.exit(code);
    });
  }

  const onPhase = (next: StartPhase) => log.info("Start-up: {phase}", { phase: phase = next });
  const starting = startService(config, { signal: stopping.signal, onPhase });
  starting.catch(() => {}); // handled below, or abandoned after STARTUP_UNWIND_MS
  let service: Service;
  try {
    const unwound = signal.promise.then(() => delay(STARTUP_UNWIND_MS)).then(() => undefined);
    const started = await Promise.race([starting, unwound]);
    if (started === undefined) {
      log.warn("Start-up did not unwind within {ms} ms of the signal; exiting", { ms: STARTUP_UNWIND_MS });
      return 0;
    }
    service = started;
  } catch (error) {
    if (error instanceof AbortedError) {
      log.info("Stopped on {signal} while {phase}: nothing was consumed", { signal: await signal.promise, phase });
      return 0;
    }
    log.error("{message}", { message: (error as Error).message });
    return 1;
  }
  phase = "consuming";
  log.info("Stopping on {signal}", { signal: await signal.promise });
  phase = "draining";
  const bound = config.shutdownTimeoutMs + CLOSE_GRACE_MS;
  return await withTimeout(service.stop(), bound, "").then((complete) => complete ? 0 : 1, () => {
    log.error("The stop did not finish within {ms} ms; exiting", { ms: bound });
    return 1;
  });
}

Deno.exit(await main());
