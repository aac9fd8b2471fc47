/**
 * `deno task start`: runs the service under its minimal permission set;
 * `deno task results` (`tools/start.ts results`): a results-only instance
 * (`main.ts results`) under its own, which names no broker host.
 *
 * Computes the flags from the configuration in the environment and `.env`
 * (tools/permissions.ts, the one source of truth), then runs
 * `deno run <flags> main.ts` as a child. SIGINT and SIGTERM are passed on so
 * the service drains as usual (a signal sent to the whole process group reaches
 * the service too: it takes the copies as one stop request), and its exit code becomes this process's (128 +
 * the signal's number when it was killed by one), so a supervisor sees the
 * service's own result.
 *
 * The launcher itself needs `--allow-env` and `--allow-read=.env` (to read the
 * configuration) and `--allow-run=deno` (to start the child).
 *
 * @module
 */

import { loadConfigOrExit } from "../lib/config/cli.ts";
import { permissionFlags, shellQuote } from "./permissions.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const FORWARDED = ["SIGINT", "SIGTERM"] as const;
const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGTERM: 15,
};

/**
 * The executable to run the child with: this same Deno when `--allow-run`
 * grants its path, else `deno` from PATH. `--allow-run=deno` is resolved
 * through PATH without following symlinks (e.g. /usr/bin/deno), while
 * `Deno.execPath()` is the real file behind it, so the name is the fallback.
 */
export function denoExecutable(): string {
  const self = Deno.execPath();
  return Deno.permissions.querySync({ name: "run", command: self }).state === "granted" ? self : "deno";
}

/**
 * Runs `main.ts` with `flags` until it exits, passing SIGINT and SIGTERM on.
 *
 * @returns the child's exit code, or 128 + signal number when a signal ended it
 */
export async function runService(flags: readonly string[], args: readonly string[] = []): Promise<number> {
  const child = new Deno.Command(denoExecutable(), {
    args: ["run", ...flags, MAIN, ...args],
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const forwarders = FORWARDED.map((signal) => {
    const forward = () => {
      try {
        child.kill(signal);
      } catch { /* already exited */ }
    };
    Deno.addSignalListener(signal, forward);
    return () => Deno.removeSignalListener(signal, forward);
  });
  try {
    const status = await child.status;
    return status.signal ? 128 + (SIGNAL_NUMBERS[status.signal] ?? 0) : status.code;
  } finally {
    for (const remove of forwarders) remove();
  }
}

if (import.meta.main) {
  // Same message and code as main.ts gives for a bad configuration.
  const config = await loadConfigOrExit("vote-aggregator");
  const flags = permissionFlags(config, { role: Deno.args[0] === "results" ? "results" : "counting" });
  if (config.logLevel === "DEBUG") {
    console.error(`vote-aggregator: deno run ${shellQuote(flags)} main.ts`);
  }
  // `deno task start -- --version` passes the "--" on: it only separates the task's arguments.
  const args = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args;
  Deno.exit(await runService(flags, args));
}
