/**
 * Messages and batches: the units the pipeline moves. The first stage turns a
 * delivery into a {@link Message} (a vote, or a rejection whose dead-letter
 * copy is already on its way); the batcher groups messages into a
 * {@link Batch}, which is committed and then acknowledged as one.
 *
 * @module
 */

import type { Delivery } from "../broker/delivery.ts";
import { parseVote, type Rejection, type Vote } from "../vote.ts";

/** One delivery on its way through the pipeline. */
export interface Message {
  delivery: Delivery;
  /** Set when it is a vote. */
  vote?: Vote;
  /** Set when it is not a vote, or the database refused the vote. */
  rejection?: Rejection;
  /** Settles with whether the dead-letter copy was confirmed stored; set with `rejection`. */
  deadLettered?: Promise<boolean>;
}

/** A closed batch: committed as one transaction, acknowledged as one. */
export interface Batch {
  messages: Message[];
  /** Hashes of its votes, when batches commit concurrently: a later batch with one of them must wait. */
  hashes: string[];
  /** `performance.now()` when its first message arrived, and when it closed. */
  openedAt: number;
  closedAt: number;
  committed: boolean;
  /** False when a dead-letter copy failed: the batch must be redelivered, not acknowledged. */
  ackable: boolean;
  acked: PromiseWithResolvers<void>;
}

/** Sends a rejected message's dead-letter copy; resolves with whether the broker confirmed it. */
export type DeadLetterer = (message: Message, rejection: Rejection) => Promise<boolean>;

/** Parses `delivery`; a message that is not a vote has its dead-letter copy sent at once. */
export function toMessage(delivery: Delivery, deadLetter: DeadLetterer): Message {
  const parsed = parseVote(delivery.body, { maxBytes: delivery.maxBytes, size: delivery.size });
  const message: Message = { delivery };
  if (parsed.ok) {
    message.vote = parsed.vote;
  } else {
    message.rejection = parsed.rejection;
    message.deadLettered = deadLetter(message, parsed.rejection);
  }
  return message;
}

/** A batch of `messages`, closed now. */
export function closeBatch(messages: Message[], trackHashes: boolean): Batch {
  return {
    messages,
    hashes: trackHashes ? hashesOf(messages) : [],
    openedAt: messages[0].delivery.receivedAt,
    closedAt: performance.now(),
    committed: false,
    ackable: true,
    acked: Promise.withResolvers<void>(),
  };
}

/** The votes of a batch (its messages that parsed), in delivery order. */
export function votesOf(batch: Batch): Vote[] {
  const votes: Vote[] = [];
  for (const m of batch.messages) if (m.vote) votes.push(m.vote);
  return votes;
}

function hashesOf(messages: Message[]): string[] {
  const hashes: string[] = [];
  for (const m of messages) if (m.vote) hashes.push(m.vote.hash);
  return hashes;
}
