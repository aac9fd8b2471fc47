/**
 * The `dead-letters` command line, shared by `deno task dead-letters`
 * (tools/dead_letters.ts) and the binary's `vote-aggregator dead-letters`:
 * flags, the broker and queue from the service's own configuration
 * (`RABBITMQ_*`; the DLQ is `<RABBITMQ_QUEUE>.dlq`), text or `--json` output,
 * exit codes. The operations are {@link ./operations.ts}'s.
 *
 * Exit codes: 0 done, 2 bad flags or configuration (purge without --yes), 3 the
 * broker refused or could not be reached (nothing was removed that was not
 * handled: unsettled letters are requeued).
 *
 * @module
 */

import amqp from "amqplib";
import { loadToolConfigOrExit, orExit, parseFlags, UsageError } from "../config/cli.ts";
import { brokerSocketOptions } from "../broker/connect.ts";
import { deadLetterNames } from "../broker/topology.ts";
import { purge, replay, show, summary } from "./operations.ts";

/** Exit code when the broker could not be used. */
export const EXIT_BROKER_FAILED = 3;

export const DEAD_LETTERS_USAGE = `Usage: dead-letters <summary|show|replay|purge> [options]

  summary                               counts messages by reason, by law and by source (the copies of one
                                        message once, and how many extra copies); oldest and newest
  show [--reason R] [--limit N] [--max-body C]
                                        the letters, oldest first, bodies bounded to C characters (default 200)
  replay [--reason R] [--limit N]       republish each message to the vote queue once (confirmed), then remove
                                        it and its extra copies from the DLQ
  purge --reason R --yes                remove the letters with reason R; the others stay in place
      --json                            one JSON document on stdout
  -h, --help

  Reads <RABBITMQ_QUEUE>.dlq on the configured broker without consuming it: every letter not replayed or
  purged is returned to its place.`;

const COMMANDS = ["summary", "show", "replay", "purge"] as const;
type Command = typeof COMMANDS[number];

function parse(args: string[]) {
  const [command, ...rest] = args;
  if (command === "-h" || command === "--help") return { help: true } as const;
  if (!COMMANDS.includes(command as Command)) {
    throw new UsageError(`the first argument is one of ${COMMANDS.join(", ")}: got ${JSON.stringify(command ?? "")}`);
  }
  const values = parseFlags(rest, {
    reason: { type: "string" },
    limit: { type: "string" },
    "max-body": { type: "string" },
    yes: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  });
  const positive = (flag: string, value: string | undefined) => {
    if (value === undefined) return undefined;
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < 1) throw new UsageError(`--${flag} must be a positive integer: got "${value}"`);
    return n;
  };
  const limit = positive("limit", values.limit);
  const maxBody = positive("max-body", values["max-body"]);
  const only = (allowed: Command[], flag: string, given: boolean) => {
    if (given && !allowed.includes(command as Command)) throw new UsageError(`${command} takes no --${flag}`);
  };
  only(["show", "replay", "purge"], "reason", values.reason !== undefined);
  only(["show", "replay"], "limit", limit !== undefined);
  only(["show"], "max-body", maxBody !== undefined);
  only(["purge"], "yes", values.yes);
  if (command === "purge" && values.reason === undefined) throw new UsageError("purge needs --reason R");
  if (command === "purge" && !values.yes) {
    throw new UsageError(`purge removes dead letters for good: add --yes (see \`summary\` for what it would remove)`);
  }
  return { help: values.help, command: command as Command, reason: values.reason, limit, maxBody, json: values.json };
}

/** Runs `dead-letters` with `args`; resolves with the exit code. */
export async function deadLettersCommand(args: string[], program = "dead-letters"): Promise<number> {
  const flags = await orExit(program, () => parse(args), { hint: `\n${DEAD_LETTERS_USAGE.split("\n")[0]}` });
  if (flags.help) {
    console.log(DEAD_LETTERS_USAGE);
    return 0;
  }
  const config = await loadToolConfigOrExit(program, ["RabbitMQ"]);
  const dlq = deadLetterNames(config.rabbitmqQueue).queue;
  let connection;
  // Several nodes (a cluster): the first that answers. The service's own socket options: decoded credentials,
  // the CA bundle, CONNECT_TIMEOUT_SECONDS.
  for (const url of config.rabbitmqUrls) {
    try {
      connection = await amqp.connect(url, brokerSocketOptions(url, config.rabbitmqCaFile, config.connectTimeoutMs));
      break;
    } catch (error) {
      console.error(`${program}: cannot connect to RabbitMQ: ${(error as Error).message}`);
    }
  }
  if (connection === undefined) return EXIT_BROKER_FAILED;
  connection.on("error", () => {});
  try {
    const channel = await connection.createConfirmChannel();
    channel.on("error", () => {});
    const out = (json: unknown, text: () => string) => console.log(flags.json ? JSON.stringify(json) : text());
    switch (flags.command) {
      case "summary": {
        const s = await summary(channel, dlq);
        const table = (t: Record<string, number>) =>
          Object.entries(t).sort(([, a], [, b]) => b - a).map(([k, n]) => `  ${String(n).padStart(8)}  ${k}`);
        const when = (l: typeof s.oldest) =>
          l ? `#${l.position} ${l.reason} ${l.deadLetteredAt ?? "(time unknown)"}` : "-";
        out(s, () =>
          [
            `${dlq}: ${s.messages} dead-lettered messages` +
            (s.extraCopies ? ` (${s.total} letters: ${s.extraCopies} extra copies of messages counted once)` : ""),
            "by reason:",
            ...table(s.byReason),
            "by law:",
            ...table(s.byLaw),
            "by source:",
            ...table(s.bySource),
            `oldest: ${when(s.oldest)}`,
            `newest: ${when(s.newest)}`,
          ].join("\n"));
        break;
      }
      case "show": {
        const letters = await show(channel, dlq, {
          reason: flags.reason,
          limit: flags.limit ?? 20,
          maxBodyChars: flags.maxBody,
        });
        out(
          letters,
          () =>
            letters.map((l) =>
              `#${l.position} ${l.reason} (${l.source}) law=${l.lawId ?? "-"} at=${l.deadLetteredAt ?? "-"} ` +
              `${l.bodyBytes} bytes${l.detail ? `\n  detail: ${l.detail}` : ""}\n  body: ${l.body}`
            ).join("\n") || `${dlq}: no dead letters${flags.reason ? ` with reason ${flags.reason}` : ""}`,
        );
        break;
      }
      case "replay": {
        const r = await replay(channel, dlq, config.rabbitmqQueue, { reason: flags.reason, limit: flags.limit });
        out(r, () =>
          `${dlq}: replayed ${r.replayed} to ${config.rabbitmqQueue} (confirmed), ` +
          (r.extraCopies ? `${r.extraCopies} extra copies of them removed, ` : "") + `${r.kept} left in place` +
          (r.truncated ? ` (${r.truncated} of them truncated copies, which are never replayed)` : ""));
        break;
      }
      case "purge": {
        const r = await purge(channel, dlq, flags.reason!);
        out(r, () => `${dlq}: purged ${r.purged} with reason ${flags.reason}, ${r.kept} left in place`);
        break;
      }
    }
    await channel.close();
    return 0;
  } catch (error) {
    console.error(`${program}: ${flags.command} failed: ${(error as Error).message}`);
    return EXIT_BROKER_FAILED;
  } finally {
    await connection.close().catch(() => {});
  }
}
