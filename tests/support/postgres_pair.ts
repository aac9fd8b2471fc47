/**
 * A PostgreSQL primary and a streaming standby of their own for a test: `initdb` (as the system user
 * `postgres` when the test runs as root) in a temp dir under /tmp, each server on a free loopback port
 * with its socket in that dir, the standby made with `pg_basebackup -R` and replicating through a
 * {@link TcpProxy}, so that a test can hold the standby back (`holdReplication`). The machine's own
 * cluster (5432) is not touched. Replication is synchronous (`synchronous_standby_names` naming the
 * standby, `synchronous_commit=on`) or PostgreSQL's default, asynchronous. Disposing it stops both
 * servers and removes the dir.
 *
 * {@link postgresPairSkipReason} says why it cannot run here: tests skip with that line.
 *
 * @example
 * ```ts
 * await using pair = await startPostgresPair({ synchronous: true });
 * await pair.killPrimary(); // kill -9 of the postmaster and its children
 * await pair.promote();     // pg_ctl promote -w of the standby
 * ```
 *
 * @module
 */

import postgres from "postgres";
import { descendants, isRoot, userIds } from "./process.ts";
import { TcpProxy } from "./proxy.ts";
import { freePort } from "./service.ts";

const BIN = "/usr/lib/postgresql/15/bin";
const USER = "postgres";
/** `application_name` of the standby's WAL receiver, as `synchronous_standby_names` and `pg_stat_replication` name it. */
export const STANDBY_NAME = "standby1";

/** One server of the pair. */
export interface PairServer {
  port: number;
  dir: string;
  /** `postgres://postgres@127.0.0.1:<port>/<database>`. */
  urlFor(database: string): string;
}

/** A running primary and standby; see the module documentation. */
export interface PostgresPair extends AsyncDisposable {
  primary: PairServer;
  standby: PairServer;
  /** The proxy the standby replicates through. */
  replication: TcpProxy;
  /** Creates database `name` on the primary (the standby replays it). */
  createDatabase(name: string): Promise<void>;
  /** Stops forwarding WAL to the standby (the proxy stalls) until {@link releaseReplication}. */
  holdReplication(): Promise<void>;
  releaseReplication(): void;
  /** kill -9 of the primary's postmaster and every child: a crashed machine, no shutdown checkpoint. */
  killPrimary(): Promise<void>;
  /** `pg_ctl promote -w` of the standby; resolves once it accepts writes. */
  promote(): Promise<void>;
  /** Bytes of WAL the standby has flushed, as the primary sees it (`pg_stat_replication`). */
  standbyFlushed(): Promise<{ flushed: string; current: string } | undefined>;
}

/** Options of {@link startPostgresPair}. */
export interface PairOptions {
  /** Synchronous replication to the standby. @default false */
  synchronous?: boolean;
}

/** Why the pair cannot be started here; `undefined` when it can. */
export function postgresPairSkipReason(): string | undefined {
  for (const name of ["initdb", "pg_ctl", "pg_basebackup"]) {
    try {
      Deno.statSync(`${BIN}/${name}`);
    } catch {
      return `${BIN}/${name} is absent (PostgreSQL 15's server binaries)`;
    }
  }
  return undefined;
}

async function run(command: string, ...args: string[]): Promise<string> {
  const root = isRoot();
  const output = await new Deno.Command(root ? "runuser" : `${BIN}/${command}`, {
    args: root ? ["-u", USER, "--", `${BIN}/${command}`, ...args] : args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  if (!output.success) throw new Error(`${command} ${args.join(" ")} failed: ${text.slice(-2000)}`);
  return text;
}

/** Starts the pair and waits until the standby streams from the primary. */
export async function startPostgresPair(options: PairOptions = {}): Promise<PostgresPair> {
  const reason = postgresPairSkipReason();
  if (reason) throw new Error(`cannot start a PostgreSQL pair: ${reason}`);
  const dir = await Deno.makeTempDir({ prefix: "vote-pgpair-", dir: "/tmp" });
  if (isRoot()) {
    const { uid, gid } = userIds(USER);
    await Deno.chown(dir, uid, gid);
  }
  const server = (name: string, port: number): PairServer => ({
    port,
    dir: `${dir}/${name}`,
    urlFor: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
  });
  const primary = server("primary", freePort());
  const standby = server("standby", freePort());
  let replication: TcpProxy | undefined;
  const stopAll = async () => {
    for (const s of [standby, primary]) {
      await run("pg_ctl", "-D", s.dir, "-m", "immediate", "-w", "stop").catch(() => {});
    }
    await replication?.[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await run("initdb", "-D", primary.dir, "-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8");
    const settings = [
      `port = ${primary.port}`,
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${dir}'`,
      "wal_level = replica",
      "max_wal_senders = 4",
      "hot_standby = on",
      "fsync = off", // a killed server loses nothing the OS has: only the standby's copy is at stake
      "shared_buffers = 32MB",
      "max_connections = 60",
      "wal_sender_timeout = 5s",
      ...(options.synchronous ? [`synchronous_standby_names = '${STANDBY_NAME}'`] : []),
    ];
    await Deno.writeTextFile(`${primary.dir}/postgresql.conf`, settings.join("\n") + "\n", { append: true });
    await run("pg_ctl", "-D", primary.dir, "-l", `${dir}/primary.log`, "-w", "start");
    replication = new TcpProxy(primary.port);
    await run(
      "pg_basebackup",
      ...["-h", "127.0.0.1", "-p", String(replication.port), "-U", USER, "-D", standby.dir, "-R", "-X", "stream"],
    );
    const standbySettings = [
      `port = ${standby.port}`,
      `primary_conninfo = 'host=127.0.0.1 port=${replication.port} user=${USER} application_name=${STANDBY_NAME}'`,
      // Promoted, it has no standby of its own to wait for (pg_basebackup copied the primary's setting), as
      // Patroni's and CloudNativePG's synchronous modes drop the wait when no standby is left.
      "synchronous_standby_names = ''",
    ];
    await Deno.writeTextFile(`${standby.dir}/postgresql.auto.conf`, standbySettings.join("\n") + "\n", {
      append: true,
    });
    await run("pg_ctl", "-D", standby.dir, "-l", `${dir}/standby.log`, "-w", "start");
  } catch (error) {
    await stopAll();
    throw error;
  }
  const proxy = replication;

  const onPrimary = async <T>(
    query: (sql: postgres.Sql) => Promise<T>,
    port = primary.port,
    database = "postgres",
  ): Promise<T> => {
    const sql = postgres(`postgres://postgres@127.0.0.1:${port}/${database}`, { max: 1, onnotice: () => {} });
    try {
      return await query(sql);
    } finally {
      await sql.end({ timeout: 1 });
    }
  };
  const standbyFlushed = () =>
    onPrimary(async (sql) => {
      const rows = await sql<{ flushed: string; current: string }[]>`
        select flush_lsn::text as flushed, pg_current_wal_lsn()::text as current
        from pg_stat_replication where application_name = ${STANDBY_NAME} and state = 'streaming'`;
      return rows[0];
    });
  // Streaming before the test starts: a synchronous primary would otherwise wait for it at the first commit.
  for (let i = 0; (await standbyFlushed().catch(() => undefined)) === undefined; i++) {
    if (i > 200) {
      await stopAll();
      throw new Error("the standby did not start streaming within 10 s");
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    primary,
    standby,
    replication: proxy,
    async createDatabase(name) {
      await onPrimary((sql) => sql.unsafe(`create database "${name}"`));
      // Replayed on the standby too, before a test points anything at it.
      for (let i = 0;; i++) {
        try {
          return await onPrimary((sql) => sql`select 1`.then(() => {}), standby.port, name);
        } catch (error) {
          if (i > 200) throw error;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    holdReplication: () => proxy.cut("stall"),
    releaseReplication: () => proxy.restore(),
    async killPrimary() {
      const pid = Number((await Deno.readTextFile(`${primary.dir}/postmaster.pid`)).split("\n")[0]);
      const pids = [pid, ...descendants(pid)];
      for (const p of pids) {
        try {
          Deno.kill(p, "SIGKILL");
        } catch { /* gone */ }
      }
    },
    async promote() {
      await run("pg_ctl", "-D", standby.dir, "-w", "promote");
    },
    standbyFlushed,
    [Symbol.asyncDispose]: stopAll,
  };
}
