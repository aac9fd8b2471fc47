/**
 * The dead-letter operations: summary (counts by reason and law, oldest and
 * newest), show (the letters with their reasons, bodies bounded and escaped),
 * replay (republish to the vote queue, confirmed; a letter leaves the DLQ only
 * after its copy is confirmed) and purge (remove the letters of one reason).
 * Each browses the DLQ once ({@link ./browse.ts}); what it does not take stays
 * where it was. Replaying is idempotent because counting is: a replayed vote
 * that was counted already is a redelivery, a no-op.
 *
 * Dead-lettering is at least once, so one message may be in the DLQ more than
 * once: its copies carry the same `x-original-digest`. Summary counts a message
 * once and says how many extra copies there are; replay republishes a message
 * once and removes its extra copies with it.
 *
 * @module
 */

import type { ConfirmChannel, ConsumeMessage, GetMessage } from "amqplib";
import { BODY_TRUNCATED_HEADER } from "../broker/dead_letter.ts";
import { browse } from "./browse.ts";
import { boundedBody, type DeadLetter, readDeadLetter, replayHeaders } from "./letter.ts";

export type { DeadLetter };

/** What {@link summary} counts. */
export interface Summary {
  /** Letters in the DLQ. */
  total: number;
  /** Distinct messages among them: the copies of one message count once, here and in the tables below. */
  messages: number;
  /** Letters that are another copy of a message counted already (`total - messages`). */
  extraCopies: number;
  byReason: Record<string, number>;
  byLaw: Record<string, number>;
  bySource: Record<string, number>;
  oldest: DeadLetter | null;
  newest: DeadLetter | null;
}

/** Which letters an operation takes. */
export interface Selection {
  /** Only letters with this reason. */
  reason?: string;
  /** At most this many. */
  limit?: number;
}

const selected = (letter: DeadLetter, { reason }: Selection) => reason === undefined || letter.reason === reason;

/** Counts the messages in `dlq`, by reason, law (`(none)` when the body names none) and source. */
export async function summary(channel: ConfirmChannel, dlq: string): Promise<Summary> {
  const result: Summary = {
    total: 0,
    messages: 0,
    extraCopies: 0,
    byReason: {},
    byLaw: {},
    bySource: {},
    oldest: null,
    newest: null,
  };
  const add = (table: Record<string, number>, key: string) => table[key] = (table[key] ?? 0) + 1;
  const copies = new Copies();
  await browse(channel, dlq, (message, position) => {
    const letter = readDeadLetter(message, position);
    result.total++;
    if (copies.seen(letter)) {
      result.extraCopies++;
      return "keep";
    }
    copies.add(letter);
    result.messages++;
    add(result.byReason, letter.reason);
    add(result.byLaw, letter.lawId ?? "(none)");
    add(result.bySource, letter.source);
    const at = (l: DeadLetter | null) => l?.deadLetteredAt ?? "";
    // Queue order is dead-lettering order; the time headers break no tie, they only tell.
    if (result.oldest === null || (letter.deadLetteredAt !== null && at(letter) < at(result.oldest))) {
      result.oldest = letter;
    }
    if (result.newest === null || letter.deadLetteredAt === null || at(letter) >= at(result.newest)) {
      result.newest = letter;
    }
    return "keep";
  });
  return result;
}

/** A letter as {@link show} lists it. */
export interface ShownLetter extends DeadLetter {
  /** The body, at most `maxBodyChars` characters, escaped (see {@link boundedBody}). */
  body: string;
  /** Headers other than the reason's, as strings, each bounded. */
  headers: Record<string, string>;
}

/** The selected letters, oldest first. */
export async function show(
  channel: ConfirmChannel,
  dlq: string,
  selection: Selection & { maxBodyChars?: number },
): Promise<ShownLetter[]> {
  const shown: ShownLetter[] = [];
  const limit = selection.limit ?? Infinity;
  await browse(channel, dlq, (message, position) => {
    const letter = readDeadLetter(message, position);
    if (selected(letter, selection)) {
      shown.push({
        ...letter,
        body: boundedBody(message.content, selection.maxBodyChars ?? 200),
        headers: shownHeaders(message),
      });
    }
    return shown.length >= limit ? "stop" : "keep";
  });
  return shown;
}

/**
 * Republishes the selected letters to `queue`, each acknowledged in the DLQ once its copy is confirmed;
 * of a message there more than once, one copy is republished and the others removed (`extraCopies`).
 * A letter whose body the service truncated (`x-reject-body-truncated`) stays: `truncated` counts them.
 */
export async function replay(
  channel: ConfirmChannel,
  dlq: string,
  queue: string,
  selection: Selection,
): Promise<{ replayed: number; extraCopies: number; kept: number; truncated: number }> {
  await channel.checkQueue(queue); // a missing vote queue fails here, before anything moves
  const returned = new Set<string>();
  const onReturn = (message: ConsumeMessage) => {
    const id = message.properties.headers?.["x-replay-id"];
    if (typeof id === "string") returned.add(id);
  };
  channel.on("return", onReturn);
  let replayed = 0;
  let extraCopies = 0;
  let kept = 0;
  let truncated = 0;
  const copies = new Copies();
  try {
    await browse(channel, dlq, async (message, position) => {
      if (replayed >= (selection.limit ?? Infinity)) return "stop";
      const letter = readDeadLetter(message, position);
      if (!selected(letter, selection)) {
        kept++;
        return "keep";
      }
      // Another copy of a message replayed (and confirmed) above: that was its replay.
      if (copies.seen(letter)) {
        extraCopies++;
        return "remove";
      }
      // Only the first bytes of the original are there: never republished as if they were the message.
      if (message.properties.headers?.[BODY_TRUNCATED_HEADER] !== undefined) {
        kept++;
        truncated++;
        return "keep";
      }
      await publishCopy(channel, queue, dlq, message, returned);
      copies.add(letter);
      replayed++;
      return "remove";
    });
  } finally {
    channel.off("return", onReturn);
  }
  return { replayed, extraCopies, kept, truncated };
}

/** The messages met so far, by digest; a letter without one is a message of its own. */
class Copies {
  readonly #digests = new Set<string>();

  /** Whether `letter` is a copy of a message added before. */
  seen(letter: DeadLetter): boolean {
    return letter.digest !== null && this.#digests.has(letter.digest);
  }

  add(letter: DeadLetter): void {
    if (letter.digest !== null) this.#digests.add(letter.digest);
  }
}

/** Removes the letters with `reason`; the others stay where they are. */
export async function purge(
  channel: ConfirmChannel,
  dlq: string,
  reason: string,
): Promise<{ purged: number; kept: number }> {
  let purged = 0;
  let kept = 0;
  await browse(channel, dlq, (message, position) => {
    if (readDeadLetter(message, position).reason !== reason) {
      kept++;
      return "keep";
    }
    purged++;
    return "remove";
  });
  return { purged, kept };
}

function publishCopy(
  channel: ConfirmChannel,
  queue: string,
  dlq: string,
  message: GetMessage,
  returned: Set<string>,
): Promise<void> {
  const id = crypto.randomUUID();
  // The expiration that may have dead-lettered it would again; a user id not ours would be refused.
  const { headers, expiration: _expiration, userId: _userId, ...properties } = message.properties;
  return new Promise((resolve, reject) => {
    channel.publish("", queue, message.content, {
      ...Object.fromEntries(Object.entries(properties).filter(([, v]) => v !== undefined)),
      persistent: true,
      mandatory: true,
      headers: { ...replayHeaders(headers, dlq), "x-replay-id": id },
    }, (error: unknown) => {
      if (returned.delete(id)) reject(new Error(`the broker returned the replayed copy: is ${queue} missing?`));
      else if (error) reject(error);
      else resolve();
    });
  });
}

function shownHeaders(message: GetMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.properties.headers ?? {})) {
    const text = typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
    out[name] = boundedBody(new TextEncoder().encode(text), 300);
  }
  return out;
}
