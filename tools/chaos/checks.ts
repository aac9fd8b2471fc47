/**
 * The soak's end checks, once the faults are stopped and everything drained:
 * each confirmed valid vote counted exactly once per law, each duplicate
 * attempt recorded once, each malformed message in the DLQ with its reason,
 * nothing left in the queue or unacknowledged, every instance's SIGTERM exit 0,
 * and `verify`'s opinion. What is expected is computed
 * from the confirmed messages' bodies, not from the service.
 *
 * @module
 */

import type { GetMessage } from "amqplib";
import { REJECT_REASON_HEADER } from "../../lib/broker/dead_letter.ts";
import { queueInfo, type TestDatabase, type TestQueue } from "../../tests/support/servers.ts";
import { assertExactOutcome, contentKey } from "../../tests/support/votes.ts";
import type { GeneratedVotes } from "../publish.ts";

/** One check's outcome. */
export interface Check {
  name: string;
  ok: boolean;
  /** What was found (or why it was skipped). */
  detail: string;
  skipped?: boolean;
}

/** What messages 0 … confirmed-1 must have done: totals, contents per hash, malformed seq → reason. */
export interface Expected {
  totals: Record<string, [number, number]>;
  contents: Map<string, Set<string>>;
  malformed: Map<number, string>;
  valid: number;
  duplicates: number;
}

/** The reject reason a malformed message of the generator must be dead-lettered with, read from its body. */
function reasonOf(text: string): string {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return "invalid_json";
  }
  if (message.law_id === undefined) return "missing_field";
  if (!/^(oui|non)$/i.test(message.choice)) return "unknown_choice";
  return "invalid_field"; // the broken hash
}

/** Reads the confirmed prefix of the generated messages. */
export function expectedOf(votes: GeneratedVotes, confirmed: number): Expected {
  const expected: Expected = { totals: {}, contents: new Map(), malformed: new Map(), valid: 0, duplicates: 0 };
  const decoder = new TextDecoder();
  for (let i = 0; i < confirmed; i++) {
    const text = decoder.decode(votes.body(i));
    const kind = votes.kind(i);
    if (kind === "malformed") {
      expected.malformed.set(i, reasonOf(text));
      continue;
    }
    const v = JSON.parse(text);
    const key = contentKey(v.vote_hash, v.law_id, v.choice, Date.parse(v.timestamp), v.citizen_id);
    if (kind === "valid") {
      expected.valid += 1;
      const totals = expected.totals[v.law_id] ??= [0, 0];
      totals[v.choice === "oui" ? 0 : 1] += 1;
      expected.contents.set(v.vote_hash, new Set([key]));
    } else {
      expected.duplicates += 1;
      expected.contents.get(v.vote_hash)!.add(key); // its original comes earlier, so is confirmed too
    }
  }
  return expected;
}

/** The database holds exactly the confirmed votes: totals per law, audit rows, duplicate attempts. */
export async function checkCounts(db: TestDatabase, expected: Expected): Promise<Check> {
  const name = "every confirmed valid vote counted exactly once per law; every duplicate attempt recorded once";
  try {
    await assertExactOutcome(db.sql, expected.totals, expected.contents);
    return { name, ok: true, detail: `${expected.valid} votes, ${expected.duplicates} duplicate attempts` };
  } catch (error) {
    return { name, ok: false, detail: (error as Error).message.slice(0, 4000) };
  }
}

/** The DLQ holds each malformed message at least once, with its reason, and nothing else. */
export function checkDeadLetters(messages: GetMessage[], expected: Expected): Check {
  const name = "every malformed message in the DLQ with its reason, nothing else there";
  const seen = new Set<number>();
  const wrong: string[] = [];
  for (const message of messages) {
    const text = message.content.toString();
    const seq = Number(text.match(/"seq":(\d+)/)?.[1] ?? NaN);
    const reason = message.properties.headers?.[REJECT_REASON_HEADER];
    if (!expected.malformed.has(seq)) wrong.push(`not a malformed message: ${text.slice(0, 120)}`);
    else if (reason !== expected.malformed.get(seq)) {
      wrong.push(`#${seq}: ${reason}, not ${expected.malformed.get(seq)}`);
    } else seen.add(seq);
  }
  const missing = [...expected.malformed.keys()].filter((seq) => !seen.has(seq));
  if (missing.length) wrong.push(`${missing.length} missing, e.g. #${missing.slice(0, 5).join(", #")}`);
  const copies = messages.length - seen.size;
  return {
    name,
    ok: wrong.length === 0,
    detail: wrong.length ? wrong.slice(0, 10).join("; ") : `${seen.size} messages (${copies} dead-lettered twice)`,
  };
}

/** Nothing ready or unacknowledged in the vote queue. */
export async function checkQueue(queue: TestQueue): Promise<Check> {
  const info = await queueInfo(queue.name);
  const ok = info !== undefined && info.ready === 0 && info.unacked === 0 && info.readyNow === 0;
  return {
    name: "vote queue empty, nothing unacknowledged",
    ok,
    detail: info ? `ready ${info.readyNow}, unacknowledged ${info.unacked}` : "the queue is gone",
  };
}

/** Every SIGTERM (the faults' and the final stop) ended in exit 0. */
export function checkExits(sigtermExits: number[], finalExits: (number | string)[]): Check {
  const bad = [
    ...sigtermExits.filter((c) => c !== 0).map((c) => `mid-run SIGTERM: ${c}`),
    ...finalExits.map((c, i) => [c, i] as const).filter(([c]) => c !== 0).map(([c, i]) => `instance ${i}: ${c}`),
  ];
  return {
    name: "every instance exits 0 on SIGTERM",
    ok: bad.length === 0,
    detail: bad.length ? bad.join("; ") : `${sigtermExits.length} mid-run and ${finalExits.length} final SIGTERMs`,
  };
}

const VERIFY = new URL("../verify.ts", import.meta.url);

/** `tools/verify.ts` (the recount and ledger replay) on the soak's database; exit 0 means it agrees. */
export async function checkVerify(db: TestDatabase, queue: TestQueue): Promise<Check> {
  const name = "verify agrees";
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", VERIFY.pathname],
    env: { DATABASE_URL: db.url, RABBITMQ_QUEUE: queue.name, POSTGRES_SSLMODE: "disable" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { name, ok: out.success, detail: `exit ${out.code}: ${text.trim().split("\n").slice(-3).join(" / ")}` };
}
