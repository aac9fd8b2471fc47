/**
 * Processes seen from outside: descendants of a process, their command lines
 * and peak memory, from `/proc` (the benchmark and the permission tests find
 * the process that really runs `main.ts` under `deno task start` this way).
 *
 * @module
 */

/** Pids of every descendant of `root`, deepest last. */
export function descendants(root: number): number[] {
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

/** The command line of `pid`, or "" once it is gone. */
export function commandLine(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ");
  } catch {
    return "";
  }
}

/** Peak resident set size of `pid` in MB (VmHWM), or undefined once it is gone. */
export function peakRssMb(pid: number): number | undefined {
  try {
    const match = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^VmHWM:\s+(\d+) kB/m);
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) `pid` has used, in seconds, or undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields 14 and 15 (utime, stime), counted after the parenthesized command; in clock ticks (100 a second).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}
