/**
 * `deno task compile`: builds `dist/vote-aggregator`, one executable holding
 * the service and its dependencies (the SQL migrations are imported as text,
 * so they are embedded too), with the permission set of tools/permissions.ts
 * baked in: the hosts come from the environment and `.env` at build time plus
 * the compose service names and localhost.
 *
 * `deno compile` builds on `denort`, Deno's runtime-only binary, which it
 * downloads from Deno's own host for this exact Deno version. Where that host
 * is unreachable, set `DENORT_BIN` to a denort of the same version (deno
 * compile reads it from the environment; this process passes its environment
 * on). A failed download ends with one line saying so and exit code
 * {@link EXIT_DENORT_UNAVAILABLE}; other failures keep deno's own code.
 *
 * Usage: `deno task compile [--output PATH] [--target TRIPLE]`.
 *
 * @module
 */

import { loadConfigOrExit, orExit, UsageError } from "../lib/config/cli.ts";
import { permissionFlags } from "./permissions.ts";
import { denoExecutable } from "./start.ts";

/** Exit code when denort could be neither downloaded nor found at `DENORT_BIN`. */
export const EXIT_DENORT_UNAVAILABLE = 3;

const ROOT = new URL("..", import.meta.url).pathname;
const DEFAULT_OUTPUT = "dist/vote-aggregator";

/**
 * npm package folders left out of the binary, relative to the npm cache. deno compile 2.9.6 parses
 * the files of every embedded package, and bintrees' extensionless test data `test/perf/100k`
 * (prom-client → tdigest → bintrees), read as a script, is one 2 MB chain of subtractions: the
 * parser overflows its stack and deno compile aborts ("has overflowed its stack"). Nothing imports
 * those tests. A folder that does not exist (another version) is ignored by deno compile.
 */
export const NPM_EXCLUDES = ["registry.npmjs.org/bintrees/1.0.2/test"] as const;

/** Options of {@link compileArgs}. */
export interface CompileOptions {
  output?: string;
  /** A `deno compile --target` triple, for another platform. */
  target?: string;
  /** Deno's npm cache (`deno info --json`'s `npmCache`), for {@link NPM_EXCLUDES}. */
  npmCache?: string;
}

/** The `deno compile` arguments for `flags` (from {@link permissionFlags} with `forCompile`). */
export function compileArgs(flags: readonly string[], options: CompileOptions = {}): string[] {
  return [
    "compile",
    ...flags,
    ...(options.npmCache ? NPM_EXCLUDES.map((path) => `--exclude=${options.npmCache}/${path}`) : []),
    ...(options.target ? ["--target", options.target] : []),
    "--output",
    options.output ?? DEFAULT_OUTPUT,
    "main.ts",
  ];
}

/**
 * Why the denort runtime was unavailable, from deno compile's error output;
 * undefined when the failure was something else.
 */
export function denortFailure(stderr: string): string | undefined {
  const plain = withoutColors(stderr);
  const missing = plain.match(/Could not find denort at '([^']*)'/);
  if (missing) return `DENORT_BIN points to ${missing[1]}, which does not exist`;
  if (!/Setting up base binary/.test(plain)) return undefined;
  const url = plain.match(/https:\/\/\S*denort-[^\s)]*/)?.[0] ?? "the denort archive";
  const cause = plain.match(/(dns error|Connection refused|timed out|certificate|404 Not Found|status code \d+)/i)?.[1];
  return `cannot download ${url}${cause ? ` (${cause})` : ""}`;
}

function withoutColors(text: string): string {
  // deno colors its output unless NO_COLOR is set; the escape sequences are matched on purpose.
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

async function npmCache(deno: string): Promise<string | undefined> {
  const { success, stdout } = await new Deno.Command(deno, { args: ["info", "--json"], stderr: "inherit" }).output();
  return success ? JSON.parse(new TextDecoder().decode(stdout)).npmCache : undefined;
}

function parseArgs(args: string[]): CompileOptions {
  const options: CompileOptions = {};
  for (let i = 0; i < args.length; i++) {
    const [name, inline] = args[i].split(/=(.*)/s, 2);
    const value = () => inline ?? args[++i];
    if (name === "--output" || name === "-o") options.output = value();
    else if (name === "--target") options.target = value();
    else throw new UsageError(`takes --output PATH and --target TRIPLE only, got ${JSON.stringify(args[i])}`);
  }
  return options;
}

if (import.meta.main) {
  const options = await orExit("compile", () => parseArgs(Deno.args));
  const flags = permissionFlags(await loadConfigOrExit("compile"), { forCompile: true });
  const deno = denoExecutable();
  const args = compileArgs(flags, { ...options, npmCache: await npmCache(deno) });
  // Progress lines are shown as they come; from deno's first error line on, the output is held back
  // so that a denort failure reads as one line instead of deno's error chain and backtrace.
  const child = new Deno.Command(deno, { args, cwd: ROOT, stdout: "inherit", stderr: "piped" }).spawn();
  let held = "";
  let pending = "";
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  for await (const chunk of child.stderr) {
    pending += decoder.decode(chunk, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) {
      if (held || /^error\b/.test(withoutColors(line))) held += `${line}\n`;
      else await Deno.stderr.write(encoder.encode(`${line}\n`));
    }
  }
  held += pending;
  const { code } = await child.status;
  const denort = code === 0 ? undefined : denortFailure(held);
  if (denort) {
    console.error(
      `compile: no denort runtime for Deno ${Deno.version.deno}: ${denort}. Set DENORT_BIN to a denort ` +
        `${Deno.version.deno} binary, or build where Deno's download host is reachable (e.g. the Dockerfile).`,
    );
    Deno.exit(EXIT_DENORT_UNAVAILABLE);
  }
  await Deno.stderr.write(encoder.encode(held));
  Deno.exit(code);
}
