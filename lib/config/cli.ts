/**
 * Command lines: the one place that loads the configuration for a program and
 * turns a bad value into exit code 2 with one line naming it — for `main.ts`
 * and every tool (`tools/`, `bench/`).
 *
 * @example
 * ```ts
 * import { loadConfigOrExit } from "./cli.ts";
 * const config = await loadConfigOrExit("publish");
 * ```
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { type Config, ConfigError, envWithDotenv, loadConfig } from "./config.ts";
import { deniedEndpoints, type Endpoint } from "./permissions.ts";

/** Exit code of every program for a bad configuration or bad arguments. */
export const EXIT_BAD_CONFIG = 2;

/** A command-line argument that breaks its rule; the message names it. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Options of {@link orExit}. */
export interface OrExitOptions {
  /** Appended to the line, e.g. " (see --help)". @default "" */
  hint?: string;
}

/**
 * `load()`, or — when it throws a {@link ConfigError} or {@link UsageError} —
 * the line `program: message` on stderr and exit {@link EXIT_BAD_CONFIG}.
 * Other errors are thrown as they are.
 */
export async function orExit<T>(program: string, load: () => T | Promise<T>, options: OrExitOptions = {}): Promise<T> {
  try {
    return await load();
  } catch (error) {
    if (!(error instanceof ConfigError || error instanceof UsageError)) throw error;
    console.error(`${program}: ${error.message}${options.hint ?? ""}`);
    Deno.exit(EXIT_BAD_CONFIG);
  }
}

/** The service's configuration from the environment and `.env`, or exit 2 (see {@link orExit}). */
export function loadConfigOrExit(program: string, options?: OrExitOptions): Promise<Config> {
  return orExit(program, async () => loadConfig(await envWithDotenv()), options);
}

/**
 * The configuration of an operator's tool that reaches `servers` only (the
 * `verify` and `dead-letters` commands): as {@link loadConfigOrExit}, and
 * exit {@link EXIT_BAD_CONFIG} with one line `program: …` naming the first of
 * those servers this process may not reach (its address and the variables that
 * set it), rather than fail later as an unreachable server.
 */
export async function loadToolConfigOrExit(program: string, servers: readonly Endpoint["what"][]): Promise<Config> {
  const config = await loadConfigOrExit(program);
  const denied = deniedEndpoints(config, servers);
  if (denied.length) {
    console.error(`${program}: ${denied[0]}`);
    Deno.exit(EXIT_BAD_CONFIG);
  }
  return config;
}

/**
 * The number a flag's `value` spells, or `undefined` when the flag is not given; a {@link UsageError}
 * `--flag must be <rule>: current value is "<value>"` when it is blank or `ok` refuses it.
 */
export function numberFlag(
  flag: string,
  value: string | undefined,
  ok: (n: number) => boolean,
  rule: string,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === "" || !ok(n)) throw new UsageError(`--${flag} must be ${rule}: current value is "${value}"`);
  return n;
}

/** Flags as `node:util`'s `parseArgs` reads them: strict, no positionals; an unknown or bad flag is a {@link UsageError}. */
export function parseFlags<T extends ParseArgsOptionsConfig>(args: string[], options: T) {
  try {
    return parseArgs({ args, strict: true, allowPositionals: false, options }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}
