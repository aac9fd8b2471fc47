/**
 * What a finished command printed, read the way a program's output is meant to be read: its data on
 * stdout alone, stderr kept apart for messages. A warning a tool writes on stderr (rabbitmqctl, Erlang,
 * a deprecation notice) may come at any point; joined to stdout, it breaks whatever parses the data.
 *
 * @module
 */

/** A finished command's exit and output, as text. */
export interface CommandText {
  code: number;
  success: boolean;
  stdout: string;
  stderr: string;
  /** stdout, then stderr: for a message, never for parsing. */
  both: string;
}

/** The text of `out`, from `Deno.Command#output()`. */
export function commandText(out: Deno.CommandOutput): CommandText {
  const decoder = new TextDecoder();
  const stdout = decoder.decode(out.stdout);
  const stderr = decoder.decode(out.stderr);
  return { code: out.code, success: out.success, stdout, stderr, both: stdout + stderr };
}

/**
 * Runs `command` (stdout and stderr piped) to its end and resolves with its stdout; rejects, naming it as
 * `what` with its exit code and all it printed, when it fails.
 */
export async function stdoutOf(command: Deno.Command, what: string): Promise<string> {
  const out = commandText(await command.output());
  if (!out.success) throw new Error(`${what} failed (${out.code}): ${out.both}`);
  return out.stdout;
}
