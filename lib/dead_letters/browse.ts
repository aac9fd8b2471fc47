/**
 * Browsing a dead-letter queue without losing or reordering a message:
 * `basic.get` without auto-ack, one message after another, each settled by the
 * visitor — kept (left unacknowledged), or removed (acknowledged, e.g. after
 * its replayed copy was confirmed) — and, at the end, every kept message given
 * back at once with `basic.nack(multiple, requeue)`. RabbitMQ puts requeued
 * messages back at their original position in a classic queue (the DLQ is
 * one), so the queue's order is what it was, less what was removed
 * (tests/dead_letters/ check it). Should this process die, the broker requeues
 * the unacknowledged messages itself: nothing is lost either way.
 *
 * It reads at most the messages the queue held when it began: letters that
 * arrive meanwhile are left for the next run.
 *
 * @module
 */

import type { ConfirmChannel, GetMessage } from "amqplib";

/** What a visitor decides for one message. */
export type Settle = "keep" | "remove" | "stop";

/** Visits each message of `queue` in order; see the module documentation. */
export async function browse(
  channel: ConfirmChannel,
  queue: string,
  visit: (message: GetMessage, position: number) => Settle | Promise<Settle>,
): Promise<{ read: number }> {
  const { messageCount } = await channel.checkQueue(queue);
  let read = 0;
  try {
    while (read < messageCount) {
      const message = await channel.get(queue, { noAck: false });
      if (message === false) break;
      const settle = await visit(message, read++);
      if (settle === "remove") channel.ack(message);
      if (settle === "stop") break;
    }
  } finally {
    // Every message not removed goes back where it was.
    // (On a channel that is gone the broker has requeued them already.)
    if (read > 0) {
      try {
        channel.nackAll(true);
      } catch { /* the channel closed: the broker requeued everything unacknowledged */ }
    }
  }
  return { read };
}
