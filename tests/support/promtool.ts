/**
 * Runs Prometheus's `promtool` for the tests that check what Prometheus will read: `/metrics`, the
 * alert rules, the dashboard's queries. promtool is an optional tool (Debian's `prometheus` package,
 * which `.ci/run` installs when apt is there): without it those tests are skipped, with a line saying so.
 *
 * @module
 */

import { commandText } from "./command.ts";

/** Whether `promtool` is on PATH; prints why the tests that need it are skipped when it is not. */
export const HAVE_PROMTOOL: boolean = await (async () => {
  try {
    const { success } = await new Deno.Command("promtool", { args: ["--version"], stdout: "null", stderr: "null" })
      .output();
    return success;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    console.log("promtool not found: skipping the promtool checks (apt-get install prometheus provides it)");
    return false;
  }
})();

/** What one promtool run printed, and its exit code. */
export interface PromtoolResult {
  code: number;
  /** Its report (`SUCCESS: …`): stdout alone. */
  stdout: string;
  /** stdout, then stderr: for a failure message. */
  output: string;
}

/**
 * Runs `promtool args…`, writing `stdin` to it when given.
 *
 * @param args promtool's arguments, e.g. `["check", "metrics"]`
 * @param stdin text for its standard input
 */
export async function promtool(args: string[], stdin?: string): Promise<PromtoolResult> {
  const child = new Deno.Command("promtool", {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const { code, stdout, both } = commandText(await child.output());
  return { code, stdout, output: both };
}
