/**
 * A PgBouncer of its own for a test: `pgbouncer` on a free loopback port in front of the test
 * PostgreSQL (TEST_POSTGRES_URL's host and port), `pool_mode=transaction` and otherwise PgBouncer's
 * defaults (no `ignore_startup_parameters`), with its generated config, auth file, log and pid file
 * in a temp dir under /tmp. PgBouncer refuses to run as root: as root it runs as `postgres`
 * (`runuser`). Disposing it stops it and removes the dir.
 *
 * {@link pgbouncerSkipReason} says why it cannot run here: tests skip with that line.
 *
 * @example
 * ```ts
 * await using bouncer = await startPgBouncer({ poolSize: 3 });
 * const url = bouncer.urlFor(db.name); // postgres://postgres@127.0.0.1:<port>/<db>
 * ```
 *
 * @module
 */

import { isRoot, userIds } from "./process.ts";
import { POSTGRES_URL } from "./servers.ts";
import { freePort } from "./service.ts";
import { startServerProcess } from "./process.ts";

const BINARY = "/usr/sbin/pgbouncer";

/** A running PgBouncer. */
export interface PgBouncer extends AsyncDisposable {
  port: number;
  /** The URL of database `name` through PgBouncer (same user as TEST_POSTGRES_URL). */
  urlFor(name: string): string;
  /** PgBouncer's log so far. */
  log(): Promise<string>;
}

/** Options of {@link startPgBouncer}. */
export interface PgBouncerOptions {
  /** Server connections per database and user (`default_pool_size`). @default 20, PgBouncer's default */
  poolSize?: number;
}

/** Why PgBouncer cannot be started here; `undefined` when it can. */
export function pgbouncerSkipReason(): string | undefined {
  try {
    Deno.statSync(BINARY);
  } catch {
    return `${BINARY} is absent (apt-get install pgbouncer)`;
  }
  return undefined;
}

/** Starts PgBouncer and waits until it accepts connections. */
export async function startPgBouncer(options: PgBouncerOptions = {}): Promise<PgBouncer> {
  const reason = pgbouncerSkipReason();
  if (reason) throw new Error(`cannot start PgBouncer: ${reason}`);
  const server = new URL(POSTGRES_URL);
  const user = decodeURIComponent(server.username) || "postgres";
  const dir = await Deno.makeTempDir({ prefix: "vote-pgbouncer-", dir: "/tmp" });
  const port = await freePort();
  const ini = [
    "[databases]",
    `* = host=${server.hostname} port=${server.port || 5432}`,
    "[pgbouncer]",
    "listen_addr = 127.0.0.1",
    `listen_port = ${port}`,
    "unix_socket_dir =",
    "auth_type = trust",
    `auth_file = ${dir}/userlist.txt`,
    "pool_mode = transaction",
    ...(options.poolSize ? [`default_pool_size = ${options.poolSize}`] : []),
    `logfile = ${dir}/pgbouncer.log`,
    `pidfile = ${dir}/pgbouncer.pid`,
  ].join("\n");
  await Deno.writeTextFile(`${dir}/pgbouncer.ini`, ini + "\n");
  await Deno.writeTextFile(`${dir}/userlist.txt`, `"${user}" "${decodeURIComponent(server.password)}"\n`);
  const root = isRoot();
  if (root) {
    const { uid, gid } = userIds("postgres");
    for (const path of [dir, `${dir}/pgbouncer.ini`, `${dir}/userlist.txt`]) await Deno.chown(path, uid, gid);
  }
  const command = root ? "runuser" : BINARY;
  const args = root ? ["-u", "postgres", "--", BINARY, `${dir}/pgbouncer.ini`] : [`${dir}/pgbouncer.ini`];
  const pgbouncer = await startServerProcess("PgBouncer", command, args, port, {
    failureLog: (printed) => Deno.readTextFile(`${dir}/pgbouncer.log`).catch(() => printed),
    // The pgbouncer process itself (runuser's child): SIGTERM is its immediate shutdown.
    beforeStop: async () => {
      const pid = Number((await Deno.readTextFile(`${dir}/pgbouncer.pid`)).trim());
      if (pid > 0) Deno.kill(pid, "SIGTERM");
    },
  }).catch(async (error) => {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  });
  const log = () => Deno.readTextFile(`${dir}/pgbouncer.log`).catch(() => pgbouncer.printed());
  const stop = async () => {
    await pgbouncer.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  return {
    port,
    urlFor(name) {
      const url = new URL(POSTGRES_URL);
      url.hostname = "127.0.0.1";
      url.port = String(port);
      url.pathname = `/${name}`;
      return url.toString();
    },
    log,
    [Symbol.asyncDispose]: stop,
  };
}
