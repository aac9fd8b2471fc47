/**
 * Topology: what the service declares on the broker, and how it adopts a vote
 * queue that someone else declared with other arguments.
 *
 * - Durable queue `<queue>`, dead-lettering to the direct exchange
 *   `<queue>.dlx`, bound to the durable queue `<queue>.dlq`. Quorum queues also
 *   get `x-delivery-limit`, and their dead-letter queue is a quorum queue too: a
 *   classic one lives on one node of a cluster, and while that node is down it
 *   cannot be declared, so the service could not reconnect anywhere. A dead-letter
 *   queue that exists with another type (a classic one from before) is used as it
 *   is, with a warning.
 * - A vote queue that exists with other arguments (the seed's `x-message-ttl`
 *   and `x-max-length`, a publisher's `x-max-priority`) is used as it is: the
 *   broker refuses the declaration with 406, and the queue is then only checked
 *   (a passive declare). The service's own dead-letter copies still go to
 *   `<queue>.dlq`, which is declared separately.
 *
 * It does not own the connection or the channel (`session.ts`) nor the
 * dead-letter copies (`dead_letter.ts`).
 *
 * @example
 * ```ts
 * import { declareTopology } from "./topology.ts";
 * await declareTopology(channel, { queue: "votes.aggregation", queueType: "classic", deliveryLimit: 20 });
 * ```
 *
 * @module
 */

import type { Channel } from "amqplib";
import type { QueueType } from "../config/config.ts";
import { getLogger } from "../log.ts";

const log = getLogger("broker");

/** What the vote queue is declared with. */
export interface QueueOptions {
  queue: string;
  queueType: QueueType;
  /** Quorum queues: the broker dead-letters a message after this many deliveries. */
  deliveryLimit: number;
}

/** The dead-letter exchange and queue names for `queue`. */
export function deadLetterNames(queue: string): { exchange: string; queue: string } {
  return { exchange: `${queue}.dlx`, queue: `${queue}.dlq` };
}

/** The vote queue's arguments: where it dead-letters, and for quorum queues the delivery limit. */
export function queueArguments({ queue, queueType, deliveryLimit }: QueueOptions): Record<string, unknown> {
  const names = deadLetterNames(queue);
  return {
    "x-dead-letter-exchange": names.exchange,
    "x-dead-letter-routing-key": names.queue,
    ...(queueType === "quorum" ? { "x-queue-type": "quorum", "x-delivery-limit": deliveryLimit } : {}),
  };
}

/** Declares the dead-letter exchange and queue (of the vote queue's type) and binds them. */
export async function declareDeadLetterQueue(
  channel: Channel,
  queue: string,
  queueType: QueueType = "classic",
): Promise<void> {
  const names = deadLetterNames(queue);
  await channel.assertExchange(names.exchange, "direct", { durable: true });
  await channel.assertQueue(names.queue, {
    durable: true,
    ...(queueType === "quorum" ? { arguments: { "x-queue-type": "quorum" } } : {}),
  });
  await channel.bindQueue(names.queue, names.exchange, names.queue);
}

/**
 * {@link declareDeadLetterQueue} on a channel from `open`; when the dead-letter queue exists with other
 * arguments (a classic one, the vote queue now quorum), checks it and binds it on a fresh channel.
 */
async function deadLetterQueueOn<C extends Channel>(open: () => Promise<C>, options: QueueOptions): Promise<C> {
  const channel = await open();
  try {
    await declareDeadLetterQueue(channel, options.queue, options.queueType);
    return channel;
  } catch (error) {
    await channel.close().catch(() => {});
    if (!isPreconditionFailed(error)) throw error;
    const names = deadLetterNames(options.queue);
    const fresh = await open();
    try {
      await fresh.checkQueue(names.queue);
      await fresh.bindQueue(names.queue, names.exchange, names.queue);
    } catch (checkError) {
      await fresh.close().catch(() => {});
      throw checkError;
    }
    warnOnce(`${names.queue}:type`, () =>
      log.warn(
        "Dead-letter queue {dlq} exists with other arguments than the service's ({type}); using it as it is. " +
          "On a cluster a classic queue is unavailable while its node is down: drain it and delete it so " +
          "the service declares it again: {error}",
        { dlq: names.queue, type: options.queueType, error: (error as Error).message },
      ));
    return fresh;
  }
}

/**
 * Declares the service's topology: the dead-letter exchange and queue, then the
 * durable vote queue. Publishers that preload a queue before the service starts
 * declare it with this too, so the service finds it as it expects. Rejects with
 * the broker's 406 when the vote queue exists with other arguments (the broker
 * then closes the channel).
 */
export async function declareTopology(channel: Channel, options: QueueOptions): Promise<void> {
  await declareDeadLetterQueue(channel, options.queue, options.queueType);
  await channel.assertQueue(options.queue, { durable: true, arguments: queueArguments(options) });
}

/** True for the broker's answer to a declaration whose arguments differ from the existing queue's. */
export function isPreconditionFailed(error: unknown): boolean {
  return (error as { code?: number }).code === 406;
}

/** What {@link declareOrAdopt} settled on. */
export interface Declared<C extends Channel> {
  /** The channel to consume on: a new one when the broker closed the first over a 406. */
  channel: C;
  /** The broker's words when the vote queue exists with other arguments and is used as it is. */
  adopted?: string;
}

/**
 * Declares the topology on a channel from `open`; when the vote queue exists
 * with other arguments, declares the dead-letter queue alone and checks that
 * the vote queue exists, on a fresh channel (the 406 closed the first).
 */
export async function declareOrAdopt<C extends Channel>(
  open: () => Promise<C>,
  options: QueueOptions,
): Promise<Declared<C>> {
  const channel = await deadLetterQueueOn(open, options);
  try {
    await channel.assertQueue(options.queue, { durable: true, arguments: queueArguments(options) });
    return { channel };
  } catch (error) {
    await channel.close().catch(() => {});
    if (!isPreconditionFailed(error)) throw error;
    const fresh = await open();
    try {
      await fresh.checkQueue(options.queue);
    } catch (checkError) {
      await fresh.close().catch(() => {});
      throw checkError;
    }
    return { channel: fresh, adopted: (error as Error).message };
  }
}

/** What the warnings below spoke of: once per process, not at every reconnect. */
const warned = new Set<string>();

function warnOnce(key: string, warn: () => void): void {
  if (warned.has(key)) return;
  warned.add(key);
  warn();
}

/** Says, once per process and queue, that the vote queue is used with arguments not the service's. */
export function warnAdopted(options: QueueOptions, brokerMessage: string): void {
  warnOnce(options.queue, () =>
    log.warn(
      "Queue {queue} exists with other arguments than {args}; using it as it is. Malformed messages still go to {dlq}, but messages the broker itself rejects are not dead-lettered: {error}",
      {
        queue: options.queue,
        args: JSON.stringify(queueArguments(options)),
        dlq: deadLetterNames(options.queue).queue,
        error: brokerMessage,
      },
    ));
}
