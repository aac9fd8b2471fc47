/**
 * Chaos soak: several instances on one queue and one database, a steady load
 * with duplicates and malformed messages, and randomized, overlapping faults
 * from a seed for minutes; then the count must still be exact.
 *
 * ```sh
 * deno task chaos --minutes 10 --seed 17
 * deno task chaos --seconds 60 --instances 3 --seed 1 --rate 1000
 * FAULT_RESTARTS=1 deno task chaos --seconds 60   # + PostgreSQL/RabbitMQ restarts: a machine of your own only
 * ```
 *
 * Needs PostgreSQL and RabbitMQ as the tests do (`TEST_POSTGRES_URL`,
 * `TEST_RABBITMQ_URL`), and `rabbitmqctl` and `ss` on PATH. Exit 0 when every
 * check passed, 1 on any discrepancy (the seed is printed), 2 on a bad flag.
 * The soak itself is `tools/chaos/`.
 *
 * @module
 */

import { numberFlag, orExit, parseFlags } from "../lib/config/cli.ts";
import { formatSummary } from "./chaos/report.ts";
import { runSoak } from "./chaos/soak.ts";

const USAGE = `Usage: deno task chaos [options]

Runs instances of the service under randomized, overlapping faults (kill -9, SIGTERM, broker and
database connections cut, pause, slow database, backends terminated, broker connections closed;
PostgreSQL and RabbitMQ restarts too with FAULT_RESTARTS=1) while publishing votes, then checks
that every confirmed vote was counted exactly once.

      --minutes N     how long the faults run (default 1)
      --seconds N     the same in seconds (wins over --minutes)
      --instances N   service instances (default 3)
      --seed S        seed of the fault schedule and the votes (default random; printed)
      --rate R        messages per second (default 1000)
      --fault-gap S   mean seconds between fault starts (default duration/15, from 2 to 6)
  -h, --help          this help`;

function parse(args: string[]) {
  const values = parseFlags(args, {
    minutes: { type: "string" },
    seconds: { type: "string" },
    instances: { type: "string" },
    seed: { type: "string" },
    rate: { type: "string" },
    "fault-gap": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  });
  const number = (flag: string, ok: (n: number) => boolean, rule: string) =>
    numberFlag(flag, (values as Record<string, unknown>)[flag] as string | undefined, ok, rule);
  const positive = (n: number) => Number.isFinite(n) && n > 0;
  const minutes = number("minutes", positive, "a positive number");
  const seconds = number("seconds", positive, "a positive number");
  return {
    help: values.help,
    seconds: seconds ?? (minutes ?? 1) * 60,
    instances: number("instances", (n) => Number.isInteger(n) && n >= 1 && n <= 10, "an integer from 1 to 10") ?? 3,
    seed: number("seed", (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32, "an integer from 0 to 2^32-1") ??
      crypto.getRandomValues(new Uint32Array(1))[0],
    rate: number("rate", (n) => positive(n) && n <= 20_000, "a number of messages per second up to 20000") ?? 1000,
    meanGapMs: (number("fault-gap", positive, "a positive number of seconds") ?? NaN) * 1000 || undefined,
  };
}

async function main(args: string[]): Promise<number> {
  const options = await orExit("chaos", () => parse(args), { hint: " (see --help)" });
  if (options.help) {
    console.log(USAGE);
    return 0;
  }
  const log = (line: string) => console.error(line);
  try {
    const summary = await runSoak({ ...options, log });
    console.log(formatSummary(summary));
    return summary.checks.every((c) => c.ok) ? 0 : 1;
  } catch (error) {
    console.error(`chaos: ${(error as Error).stack ?? error}\nreproduce with --seed ${options.seed}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
