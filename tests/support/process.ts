/**
 * Processes seen from outside: descendants of a process, their command lines
 * and peak memory and CPU time, from `/proc`, and server programs a test starts and stops (the benchmark and the permission tests find
 * the process that really runs `main.ts` under `deno task start` this way).
 *
 * @module
 */

import { untilAccepting } from "./wait.ts";

/** Pids of every descendant of `root`, deepest last. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of parentsOf()) children.set(ppid, [...children.get(ppid) ?? [], pid]);
  const found: number[] = [];
  const queue = [root];
  while (queue.length) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

/**
 * Every process as [pid, parent pid], from `/proc`; from `ps` where Deno may not read `/proc` (it needs
 * --allow-all there, `ps` only --allow-run: the test task's permissions).
 */
function parentsOf(): [number, number][] {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync("/proc")];
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    const out = new Deno.Command("ps", { args: ["-e", "-o", "pid=,ppid="], stdout: "piped" }).outputSync();
    return new TextDecoder().decode(out.stdout).trim().split("\n").map((line) =>
      line.trim().split(/\s+/).map(Number) as [number, number]
    );
  }
  const pairs: [number, number][] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      // Field 4 of /proc/<pid>/stat, after the parenthesized command (which may hold spaces).
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      pairs.push([Number(entry.name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])]);
    } catch { /* gone meanwhile */ }
  }
  return pairs;
}

/** The command line of `pid`, or "" once it is gone; from `ps` where Deno may not read `/proc` (see parentsOf). */
export function commandLine(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) return "";
    const out = new Deno.Command("ps", { args: ["-o", "args=", "-p", String(pid)], stdout: "piped" }).outputSync();
    return new TextDecoder().decode(out.stdout).trim();
  }
}

/** Peak resident set size of `pid` in MB (VmHWM), or undefined once it is gone. */
export function peakRssMb(pid: number): number | undefined {
  const match = procStatus(pid)?.match(/^VmHWM:\s+(\d+) kB/m);
  return match ? Number(match[1]) / 1024 : undefined;
}

/**
 * `/proc/<pid>/status`, or undefined once it is gone. Deno reads `/proc` only with --allow-all; under the
 * test task's permissions (--allow-run) `cat` reads it.
 */
function procStatus(pid: number): string | undefined {
  const path = `/proc/${pid}/status`;
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) return undefined;
  }
  const out = new Deno.Command("cat", { args: [path], stdout: "piped", stderr: "null" }).outputSync();
  return out.success ? new TextDecoder().decode(out.stdout) : undefined;
}

/** CPU seconds (user + system) `pid` has used so far, or undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields 14 and 15 (utime, stime), counted after the parenthesized command; in clock ticks (100 a second on Linux).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** CPU seconds of `pids` together (those gone count 0). */
export function totalCpuSeconds(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + (cpuSeconds(pid) ?? 0), 0);
}

/** CPU seconds of `root` and every descendant (a service under `deno task start` is a grandchild). */
export function treeCpuSeconds(root: number): number {
  return totalCpuSeconds([root, ...descendants(root)]);
}

/** Pids of the processes whose command name (`/proc/<pid>/comm`) is `name`, e.g. `beam.smp`. */
export function pidsNamed(name: string): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${entry.name}/comm`).trim() === name) found.push(Number(entry.name));
    } catch { /* gone meanwhile */ }
  }
  return found;
}

/** True when this process runs as root (Deno.uid() needs --allow-sys and /proc/self --allow-all: `id` answers). */
export function isRoot(): boolean {
  const out = new Deno.Command("id", { args: ["-u"], stdout: "piped" }).outputSync();
  return new TextDecoder().decode(out.stdout).trim() === "0";
}

/** The uid and gid of system user `name`, from /etc/passwd. */
export function userIds(name: string): { uid: number; gid: number } {
  const line = Deno.readTextFileSync("/etc/passwd").split("\n").find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`no user ${name} in /etc/passwd`);
  const [, , uid, gid] = line.split(":");
  return { uid: Number(uid), gid: Number(gid) };
}

/** A server program a test started (nginx, PgBouncer): what it printed, and how to stop it. */
export interface ServerProcess {
  /** What it printed on stdout and stderr so far. */
  printed(): string;
  /** Stops it (`beforeStop`, then SIGTERM) and waits until it has exited. */
  stop(): Promise<void>;
}

/** Options of {@link startServerProcess}. */
export interface ServerProcessOptions {
  /** What to show when it does not start. @default what it printed */
  failureLog?: (printed: string) => Promise<string>;
  /** Run before the SIGTERM to `command`, e.g. to signal the real server behind a `runuser`. */
  beforeStop?: () => Promise<void>;
}

/**
 * Starts `command` and waits until 127.0.0.1:`port` accepts connections. When it exits first or never listens, it is
 * stopped and the error names it, with the end of its log ({@link ServerProcessOptions.failureLog}).
 */
export async function startServerProcess(
  name: string,
  command: string,
  args: string[],
  port: number,
  options: ServerProcessOptions = {},
): Promise<ServerProcess> {
  const child = new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "piped" }).spawn();
  let printed = "";
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) printed += chunk;
  };
  collect(child.stdout).catch(() => {});
  collect(child.stderr).catch(() => {});
  let exited = false;
  child.status.then(() => exited = true);
  const stop = async () => {
    await options.beforeStop?.().catch(() => {});
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
  };
  try {
    await untilAccepting(port, () => exited);
  } catch {
    const log = await (options.failureLog ?? ((text) => Promise.resolve(text)))(printed).catch(() => printed);
    await stop();
    throw new Error(`${name} did not start: ${log.slice(-2000)}`);
  }
  return { printed: () => printed, stop };
}
