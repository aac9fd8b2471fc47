import assert from "node:assert/strict";

const composeFile = new URL("../compose.yaml", import.meta.url).pathname;

/** The compose implementations on this machine: docker-compose (v1, or v2's standalone binary) and `docker compose` (v2 plugin). */
async function composeCommands(): Promise<string[][]> {
  const found: string[][] = [];
  for (const command of [["docker-compose"], ["docker", "compose"]]) {
    try {
      const { success } = await new Deno.Command(command[0], {
        args: [...command.slice(1), "version"],
        stdout: "null",
        stderr: "null",
      }).output();
      if (success) found.push(command);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  if (!found.length) console.log("neither docker-compose nor docker compose found: skipping the compose.yaml check");
  return found;
}
const COMMANDS = await composeCommands();

Deno.test({
  name: "compose: every compose on this machine accepts compose.yaml (v1 1.29 included: no top-level name)",
  ignore: !COMMANDS.length,
  fn: async () => {
    for (const command of COMMANDS) {
      // `config` validates and resolves the file without talking to an engine.
      const { code, stdout, stderr } = await new Deno.Command(command[0], {
        args: [...command.slice(1), "-f", composeFile, "config", "--services"],
        stdout: "piped",
        stderr: "piped",
        // The defaults in compose.yaml, not whatever the shell running the tests has set.
        clearEnv: true,
        env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: Deno.env.get("HOME") ?? "/tmp" },
      }).output();
      const text = new TextDecoder().decode(stdout);
      assert.equal(code, 0, `${command.join(" ")} config: ${new TextDecoder().decode(stderr)}`);
      assert.deepEqual(text.trim().split("\n").sort(), ["aggregator", "grafana", "postgres", "prometheus", "rabbitmq"]);
    }
  },
});
