/**
 * The service's permission set: the one place that says what `main.ts` may do.
 * `deno task start` (tools/start.ts) runs the service with these flags,
 * `deno task compile` (tools/compile.ts) bakes them into the binary, and
 * tests/config/permissions_test.ts runs the real service under exactly them.
 *
 * It is computed from the configuration the service itself reads
 * (`loadConfig(await envWithDotenv())`), so the network allow-list names the
 * broker and database of this deployment, not a list kept by hand:
 *
 * - `--allow-net`: every broker node's host:port (`RABBITMQ_URL` or `RABBITMQ_HOST`/`RABBITMQ_PORT`), the
 *   database's host:port (`DATABASE_URL` or `POSTGRES_HOST`/`POSTGRES_PORT`), and the address the
 *   control plane listens on (`HTTP_HOST`:`PROMETHEUS_PORT`; Deno checks a listen against the bind
 *   address as written, so `0.0.0.0:8001` is its own entry and grants no outgoing connection).
 * - `--allow-env`: exactly `VARIABLE_NAMES` from lib/config/variables.ts.
 * - `--allow-read`: `.env`, plus `RABBITMQ_CA_FILE` and `POSTGRES_SSLROOTCERT` when set. The SQL
 *   migrations are imported as text modules (lib/database/pool.ts), so they need no read permission, in
 *   `deno run` or in the binary; `.env` stays relative, resolved against the working directory at run
 *   time in both.
 * - `--ignore-env` (grants nothing) for the variables npm:postgres reads as fallbacks: see
 *   {@link IGNORED_ENV}.
 * - `--no-prompt` for `deno run` (a compiled binary never prompts).
 *
 * Nothing else: found by running the service under `--no-prompt` with this set, exercising every
 * route, a commit and a dead letter, and watching for permission errors. What the dependencies
 * wanted beyond it, and what was done about it, is in {@link DEPENDENCY_NOTES} (`--explain`).
 *
 * For `deno compile` the hosts are fixed at build time, so the compose service
 * names and localhost are added to whatever the build's env/.env says: one
 * binary then runs in the compose stack and on a VM with local servers.
 *
 * Why generated flags and not deno.json's `"permissions"` (named sets for
 * `deno run -P` / `deno compile -P`): a set in deno.json is static JSON. The
 * broker and database hosts differ per deployment and live in env/.env, so a
 * static set would either allow any host (`"net": true`, defeating the point)
 * or need deno.json edited per deployment; and its `env` list would be a second
 * copy of `VARIABLE_NAMES` that drifts. Deno 2.9 also prints that `-P` is
 * experimental. Generating the flags keeps one source (lib/config/config.ts), follows
 * the deployment's own configuration, and works the same for `deno run` and
 * `deno compile`.
 *
 * `deno task results` (tools/start.ts `results`) runs a results-only instance
 * under the same rules with its own endpoints: no broker host, and only the
 * results' database (`RESULTS_DATABASE_URL`, else `DATABASE_URL`).
 *
 * Run it to print the flags (shell-quoted, one line):
 * `deno run --allow-env --allow-read=.env tools/permissions.ts [--compile] [--results]`.
 *
 * @module
 */

import { loadConfigOrExit } from "../lib/config/cli.ts";
import { VARIABLE_NAMES } from "../lib/config/variables.ts";
import { endpoints, type PermissionConfig, type Role } from "../lib/config/permissions.ts";
import { hostPort } from "../lib/config/url.ts";

export {
  deniedEndpoints,
  type Endpoint,
  endpoints,
  type PermissionConfig,
  type Role,
} from "../lib/config/permissions.ts";

/**
 * Environment variables npm:postgres (postgres.js 3.4.9, `parseOptions` in src/index.js) reads as
 * fallbacks for options the service does not set: `PG` + each option name (`PGSSLNEGOTIATION`,
 * `PGIDLE_TIMEOUT`, ...), `PGAPPNAME` and `PGTARGETSESSIONATTRS` always, `PGPASSWORD`/`PGPORT`/
 * `PGUSER`/`PGDATABASE`/`PGHOST` when `DATABASE_URL` leaves that part out, and `USERNAME`/`USER`/
 * `LOGNAME` when it has no user and `os.userInfo()` is denied. Under `--no-prompt` the first such
 * read throws (NotCapable) and the service cannot start.
 *
 * They are given to `--ignore-env`, not `--allow-env`: reads return `undefined`, so the database
 * connection follows lib/config/config.ts alone (a stray `PGSSLMODE`-like variable on a host cannot change
 * it) and no access is granted. Any other unexpected read still fails loudly, which
 * tests/config/permissions_test.ts would catch after a dependency upgrade.
 */
export const IGNORED_ENV = [
  "PGHOST",
  "PGPORT",
  "PGUSERNAME",
  "PGUSER",
  "PGDATABASE",
  "PGPASSWORD",
  "PGAPPNAME",
  "PGTARGETSESSIONATTRS",
  "PGTARGET_SESSION_ATTRS",
  "PGSSLNEGOTIATION",
  "PGIDLE_TIMEOUT",
  "PGMAX_LIFETIME",
  "PGMAX_PIPELINE",
  "PGBACKOFF",
  "PGKEEP_ALIVE",
  "PGPREPARE",
  "PGDEBUG",
  "PGFETCH_TYPES",
  "PGPUBLICATIONS",
  "USERNAME",
  "USER",
  "LOGNAME",
] as const;

/**
 * Which dependency needed more than the service's own permissions, and why; printed by
 * `tools/permissions.ts --explain`.
 */
export const DEPENDENCY_NOTES: readonly string[] = [
  "npm:postgres reads PG* variables (and USERNAME/USER/LOGNAME) as fallbacks for options the service " +
  "leaves unset; each read throws under --no-prompt. --ignore-env makes them undefined instead of " +
  "granting them (IGNORED_ENV), so only lib/config/config.ts configures the connection.",
  "npm:prom-client's default process metrics read /proc/self/status, /proc/self/fd and /proc/self/limits " +
  "on Linux. Deno grants /proc/self only under --allow-all (not even --allow-read=/proc/self/status), " +
  "which is not given. Left denied: lib/metrics/registry.ts drops those five metrics and reports " +
  "process_resident_memory_bytes from Deno.memoryUsage(), which needs no permission.",
  "Traces (OTEL_DENO=true, lib/pipeline/tracing.ts): Deno's built-in OpenTelemetry reads OTEL_* and sends to " +
  "the collector from the runtime itself, outside the permission system, and npm:@opentelemetry/api reads no " +
  "variable; so neither the OTEL_* variables nor the collector's host are added (tests/pipeline/tracing_test.ts exports " +
  "spans under exactly this set).",
  "npm:amqplib, @logtape/logtape and dotenv need nothing beyond the broker's host:port and .env; none asks " +
  "for --allow-sys (no os.hostname/os.userInfo on the paths the service uses).",
];

/** V8 flags for the service (see {@link permissionFlags}). */
export const V8_FLAGS = ["--max-semi-space-size=4"] as const;

/** Hosts a compiled binary may also reach: the compose service names and this machine. */
export const COMPILE_BROKER_HOSTS = ["rabbitmq", "localhost", "127.0.0.1"] as const;
/** See {@link COMPILE_BROKER_HOSTS}. */
export const COMPILE_DATABASE_HOSTS = ["postgres", "localhost", "127.0.0.1"] as const;

/** Options of {@link permissionFlags}. */
export interface PermissionOptions {
  /**
   * Flags for `deno compile`: the hosts also include the compose service names
   * and localhost, and `--no-prompt` is left out (a compiled binary never prompts).
   */
  forCompile?: boolean;
  /** `results`: a results-only instance's (`main.ts results`): no broker, the results' database only. @default "counting" */
  role?: Role;
}

/**
 * The permission flags for running `main.ts` with `config`.
 *
 * @param config the resolved configuration (as `loadConfig` returns it)
 * @param options `forCompile` for `deno compile`
 * @returns flags for `deno run` / `deno compile`, in a stable order
 */
export function permissionFlags(config: PermissionConfig, options: PermissionOptions = {}): string[] {
  const net = new Set<string>();
  for (const { what, address, port } of endpoints(config, options.role)) {
    net.add(address);
    if (!options.forCompile || what === "HTTP") continue;
    for (const host of what === "RabbitMQ" ? COMPILE_BROKER_HOSTS : COMPILE_DATABASE_HOSTS) {
      net.add(hostPort(host, port));
    }
  }
  const read = [".env", config.rabbitmqCaFile, config.postgresSslRootCert].filter((p): p is string => p !== undefined);
  const flags = [
    `--allow-net=${[...net].join(",")}`,
    `--allow-env=${VARIABLE_NAMES.join(",")}`,
    `--allow-read=${[...new Set(read)].join(",")}`,
    `--ignore-env=${IGNORED_ENV.join(",")}`,
  ];
  // Not a permission, but a flag start and compile must share: V8's young generation grows to 16 MB
  // semi-spaces under a fast drain, most of the peak RSS; 4 MB held the 1M-vote backlog at ~150 MB
  // instead of ~198 MB at the same speed (bench/bench.ts).
  flags.push(`--v8-flags=${V8_FLAGS.join(",")}`);
  // A service must fail on a missing permission, never wait at a prompt.
  if (!options.forCompile) flags.push("--no-prompt");
  return flags;
}

/** `flags` as one line a POSIX shell reads back as the same words. */
export function shellQuote(flags: readonly string[]): string {
  return flags.map((flag) => /^[\w=,.:/@%+-]+$/.test(flag) ? flag : `'${flag.replaceAll("'", `'\\''`)}'`).join(" ");
}

if (import.meta.main) {
  if (Deno.args.includes("--explain")) {
    for (const note of DEPENDENCY_NOTES) console.log(`- ${note}`);
    Deno.exit(0);
  }
  const config = await loadConfigOrExit("permissions");
  const role = Deno.args.includes("--results") ? "results" : "counting";
  console.log(shellQuote(permissionFlags(config, { forCompile: Deno.args.includes("--compile"), role })));
}
