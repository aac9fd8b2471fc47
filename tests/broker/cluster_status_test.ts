import assert from "node:assert/strict";
import { commandText, stdoutOf } from "../support/command.ts";
import { rabbitmqctl } from "../support/servers.ts";

/** A command that prints `json` on stdout, then a warning on stderr, as rabbitmqctl may. */
function noisy(json: string, code = 0): Deno.Command {
  return new Deno.Command("sh", {
    args: [
      "-c",
      `printf '%s\\n' "$1"; echo "warning: the Erlang cookie is world-readable" >&2; exit ${code}`,
      "sh",
      json,
    ],
    stdout: "piped",
    stderr: "piped",
  });
}

Deno.test("rabbitmqctl output: the JSON is read from stdout alone, a line on stderr after it does not break it", async () => {
  const status = JSON.stringify({ running_nodes: ["a@localhost", "b@localhost"], alarms: [] });
  const out = commandText(await noisy(status).output());
  assert.throws(() => JSON.parse(out.both), SyntaxError, "stdout and stderr joined do not parse");
  assert.deepEqual(JSON.parse(await stdoutOf(noisy(status), "cluster_status")).running_nodes, [
    "a@localhost",
    "b@localhost",
  ]);
  await assert.rejects(
    stdoutOf(noisy("{}", 69), "rabbitmqctl -n x cluster_status"),
    /^Error: rabbitmqctl -n x cluster_status failed \(69\): \{\}\nwarning: the Erlang cookie is world-readable\n$/,
    "a failure names the command and says all it printed",
  );
});

Deno.test("rabbitmqctl output: the broker's own cluster_status parses from stdout", async () => {
  const status = JSON.parse(await rabbitmqctl("cluster_status", "--formatter", "json")) as { running_nodes: string[] };
  assert.ok(status.running_nodes.length >= 1, JSON.stringify(status));
});
