/**
 * The vote aggregator: consumes validated votes from RabbitMQ, commits exact
 * per-law totals to PostgreSQL, and serves its control plane over HTTP.
 *
 * Reads `.env` and the environment (see `lib/config.ts`), starts the service,
 * and on SIGINT or SIGTERM drains it: exit 0 when everything received was
 * committed and acknowledged, 1 otherwise (what was not is redelivered), 2 on a
 * bad configuration.
 *
 * `vote-aggregator verify …` and `vote-aggregator dead-letters …` run the
 * operator's tools instead (lib/audit/command.ts, lib/dead_letters/command.ts),
 * under the same permission set.
 *
 * @module
 */

import { verifyCommand } from "./lib/audit/command.ts";
import { loadConfigOrExit } from "./lib/cli.ts";
import { deadLettersCommand } from "./lib/dead_letters/command.ts";
import { getLogger, setupLogging } from "./lib/log.ts";
import { deniedEndpoints } from "./lib/permissions.ts";
import { startService } from "./lib/service.ts";

const SUBCOMMANDS: Record<string, (args: string[], program: string) => Promise<number>> = {
  verify: verifyCommand,
  "dead-letters": deadLettersCommand,
};

async function main(): Promise<number> {
  const [subcommand, ...args] = Deno.args;
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

  const signal = Promise.withResolvers<string>();
  for (const name of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(name, () => signal.resolve(name));
  }

  let service;
  try {
    service = await startService(config);
  } catch (error) {
    log.error("{message}", { message: (error as Error).message });
    return 1;
  }
  log.info("Stopping on {signal}", { signal: await signal.promise });
  return (await service.stop()) ? 0 : 1;
}

Deno.exit(await main());
