/**
 * The `results` command line (`vote-aggregator results`, `deno task results`):
 * a results-only instance ({@link ./only.ts}) from the service's own
 * configuration, run until SIGINT or SIGTERM. It owns the process's side:
 * flags, the permission check, logging, signals and the exit code.
 *
 * Exit codes: 0 stopped on a signal; 1 the start failed (the database
 * unreachable, the schema missing or not current, the port taken); 2 a bad
 * configuration or flag.
 *
 * @module
 */

import { EXIT_BAD_CONFIG, loadConfigOrExit, orExit, parseFlags } from "../config/cli.ts";
import { deniedEndpoints } from "../config/permissions.ts";
import { getLogger, setupLogging } from "../log.ts";
import { AbortedError } from "../retry.ts";
import { startResultsOnly } from "./only.ts";

export const RESULTS_USAGE = `Usage: results

  Serves the live results alone (/, /results, /results/{law_id}, /results/stream, /healthz, /readyz, /metrics)
  from RESULTS_DATABASE_URL or DATABASE_URL, read-only: no broker, no writes, no migrations.
  -h, --help`;

/** Runs a results-only instance until a signal; resolves with the exit code. */
export async function resultsCommand(args: string[], program = "results"): Promise<number> {
  const flags = await orExit(
    program,
    () => parseFlags(args, { help: { type: "boolean", short: "h", default: false } }),
    {
      hint: `\n${RESULTS_USAGE.split("\n")[0]}`,
    },
  );
  if (flags.help) {
    console.log(RESULTS_USAGE);
    return 0;
  }
  const config = await loadConfigOrExit(program);
  if (!config.resultsEnabled) {
    console.error(`${program}: RESULTS_ENABLED=false turns off the results, all a results-only instance serves`);
    return EXIT_BAD_CONFIG;
  }
  const denied = deniedEndpoints(config, undefined, "results");
  if (denied.length) {
    for (const reason of denied) console.error(`${program}: ${reason}`);
    return EXIT_BAD_CONFIG;
  }
  await setupLogging(config.logLevel, config.logFormat);
  const log = getLogger("main");
  const stopping = new AbortController();
  const signal = Promise.withResolvers<string>();
  for (const name of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(name, () => {
      stopping.abort();
      signal.resolve(name);
    });
  }
  let instance;
  try {
    instance = await startResultsOnly(config, stopping.signal);
  } catch (error) {
    if (error instanceof AbortedError) return 0;
    log.error("{message}", { message: (error as Error).message });
    return 1;
  }
  log.info("Stopping on {signal}", { signal: await signal.promise });
  await instance.stop();
  return 0;
}
