/**
 * Running a command-line tool of `tools/` as operators do (`deno run` with the
 * task's permissions), with the service's variables from `env` only.
 *
 * @module
 */

/** What a tool run printed and returned. */
export interface ToolRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `tools/<script>` with `args`, in an environment of PATH, HOME, DENO_DIR and `env`. */
export async function runTool(script: string, args: string[], env: Record<string, string> = {}): Promise<ToolRun> {
  const base: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "DENO_DIR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) base[name] = value;
  }
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--allow-net", "--allow-env", "--allow-read=.env", `tools/${script}`, ...args],
    cwd: new URL("../..", import.meta.url).pathname,
    env: { ...base, NO_COLOR: "1", ...env },
    clearEnv: true,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}
