/**
 * Consuming: the RabbitMQ connection, its topology, and the consumer.
 *
 * - Reconnects by itself (amqplib's recovery: exponential backoff with jitter,
 *   capped at 30 s), re-declares the topology and consumes again, unless paused.
 *   Any channel error or a consumer cancelled by the server is turned into a
 *   reconnect, so there is one recovery path.
 * - Every delivery carries the number of the session (connection) it came on.
 *   Delivery tags mean nothing on another channel, so acknowledgements for a
 *   session that is gone are dropped: those messages are redelivered, and the
 *   writer's deduplication makes the copies no-ops.
 * - Messages that are not votes are published to the dead-letter exchange with
 *   the reason in headers, and confirmed, before they are acknowledged.
 *
 * Topology: durable queue `<queue>` dead-lettering to exchange `<queue>.dlx`,
 * bound to durable queue `<queue>.dlq`.
 *
 * @example
 * ```ts
 * import { BrokerConsumer } from "./consumer.ts";
 * const consumer = new BrokerConsumer({
 *   url: "amqp://guest:guest@127.0.0.1:5672/", queue: "votes.aggregation", prefetch: 100,
 *   queueType: "classic", deliveryLimit: 20,
 *   onDelivery: (d) => consumer.ack(d.session, d.tag),
 * });
 * await consumer.start();
 * ```
 *
 * @module
 */

import amqp from "amqplib";
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, RecoveringChannelModel } from "amqplib";
import { Buffer } from "node:buffer";
import type { QueueType } from "./config.ts";
import { redactUrl } from "./config.ts";
import { getLogger } from "./log.ts";
import type { Rejection } from "./vote.ts";

const log = getLogger("broker");

/** One message received, not yet acknowledged. */
export interface Delivery {
  body: Uint8Array;
  /** Delivery tag on its session's channel. */
  tag: number;
  /** Which connection it came on (see {@link BrokerConsumer.ack}). */
  session: number;
  /** `performance.now()` at receipt. */
  receivedAt: number;
  redelivered: boolean;
  headers: Record<string, unknown> | undefined;
  contentType: string | undefined;
}

/** Options of {@link BrokerConsumer}. */
export interface BrokerConsumerOptions {
  url: string;
  queue: string;
  /** Unacknowledged messages the broker may push (bounds memory). */
  prefetch: number;
  queueType: QueueType;
  /** Quorum queues: the broker dead-letters a message after this many deliveries. */
  deliveryLimit: number;
  /** PEM CA bundle path for amqps://. */
  caFile?: string;
  /** Receives every message, in delivery order. */
  onDelivery: (delivery: Delivery) => void;
  /** Told when a session opens (consuming or not) and when it is lost. */
  onSessionChange?: (connected: boolean) => void;
  /** Attempts at the first connection before {@link BrokerConsumer.start} fails. @default 5 */
  initialMaxRetries?: number;
}

/** Header names a dead-lettered message carries. */
export const REJECT_REASON_HEADER = "x-reject-reason";
export const REJECT_DETAIL_HEADER = "x-reject-detail";
/** Header that tells a returned (unroutable) dead-letter publish apart from the others. */
const DEAD_LETTER_ID_HEADER = "x-dead-letter-id";

/** What the vote queue is declared with. */
export type QueueOptions = Pick<BrokerConsumerOptions, "queue" | "queueType" | "deliveryLimit">;

/** The vote queue's arguments: where it dead-letters, and for quorum queues the delivery limit. */
export function queueArguments({ queue, queueType, deliveryLimit }: QueueOptions): Record<string, unknown> {
  const names = BrokerConsumer.deadLetterNames(queue);
  return {
    "x-dead-letter-exchange": names.exchange,
    "x-dead-letter-routing-key": names.queue,
    ...(queueType === "quorum" ? { "x-queue-type": "quorum", "x-delivery-limit": deliveryLimit } : {}),
  };
}

/**
 * Declares the service's topology: the dead-letter exchange and queue, then the
 * durable vote queue. Publishers that preload a queue before the service starts
 * declare it with this too, so the service finds it as it expects. Rejects with
 * the broker's 406 when the vote queue exists with other arguments.
 */
export async function declareTopology(channel: Channel, options: QueueOptions): Promise<void> {
  const names = BrokerConsumer.deadLetterNames(options.queue);
  await channel.assertExchange(names.exchange, "direct", { durable: true });
  await channel.assertQueue(names.queue, { durable: true });
  await channel.bindQueue(names.queue, names.exchange, names.queue);
  await channel.assertQueue(options.queue, { durable: true, arguments: queueArguments(options) });
}

/** The consumer of the vote queue; see the module documentation. */
export class BrokerConsumer {
  readonly #options: BrokerConsumerOptions;
  #connection: RecoveringChannelModel | undefined;
  #model: ChannelModel | undefined;
  #channel: ConfirmChannel | undefined;
  #consumerTag: string | undefined;
  #session = 0;
  #closing = false;
  readonly #pauseReasons = new Set<string>();
  /** Dead-letter publishes the broker returned as unroutable (the DLQ or its binding is gone). */
  readonly #returned = new Set<string>();
  // Pause, resume and (re)connect change the consumer one at a time, in order.
  #steps: Promise<void> = Promise.resolve();

  constructor(options: BrokerConsumerOptions) {
    this.#options = options;
  }

  /** The dead-letter exchange and queue names for `queue`. */
  static deadLetterNames(queue: string): { exchange: string; queue: string } {
    return { exchange: `${queue}.dlx`, queue: `${queue}.dlq` };
  }

  /** Number of the current session; 0 before the first connection. */
  get session(): number {
    return this.#session;
  }

  /** True while a channel is open. */
  get connected(): boolean {
    return this.#channel !== undefined;
  }

  /** True while messages are being consumed. */
  get consuming(): boolean {
    return this.#consumerTag !== undefined;
  }

  /** True while any pause reason holds. */
  get paused(): boolean {
    return this.#pauseReasons.size > 0;
  }

  /** Connects, declares the topology and starts consuming (unless paused). Resolves on the first connection. */
  async start(): Promise<void> {
    const { url, caFile } = this.#options;
    const socketOptions = caFile ? { ca: [Deno.readTextFileSync(caFile)] } : {};
    let attempts = 0;
    this.#connection = await amqp.connect(url, {
      ...socketOptions,
      recovery: {
        initialDelay: 500,
        maxDelay: 30_000,
        factor: 2,
        jitter: 0.5,
        maxRetries: Infinity,
        initialMaxRetries: this.#options.initialMaxRetries ?? 5,
        waitForConnect: false,
        setup: (model: ChannelModel) => this.#setup(model),
      },
    });
    this.#connection.on("connect-failed", (error: Error) => {
      log.warn("Cannot connect to RabbitMQ at {url}: {error}", {
        url: redactUrl(url),
        error: error.message,
      });
    });
    this.#connection.on("disconnect", (error: Error) => this.#lost(error));
    this.#connection.on(
      "error",
      (error: Error) => log.warn("Broker connection error: {error}", { error: error.message }),
    );
    this.#connection.on("reconnect-scheduled", ({ attempt, delay }: { attempt: number; delay: number }) => {
      attempts = attempt;
      log.info("Reconnecting to RabbitMQ in {delay} ms (attempt {attempt})", { delay, attempt });
    });
    try {
      await this.#connection.waitForConnect();
    } catch (error) {
      throw new Error(
        `Cannot connect to RabbitMQ at ${redactUrl(url)} after ${attempts + 1} attempt(s): ${
          (error as Error).message
        }. Is it running, and are RABBITMQ_HOST/RABBITMQ_PORT/RABBITMQ_USER right?`,
        { cause: error },
      );
    }
  }

  /**
   * Stops or restarts consumption for `reason` ("operator", "database", …).
   * Consumption runs only when no reason holds, and the state survives reconnects.
   * Resolves once the broker confirmed the change (messages already delivered
   * were handed to `onDelivery`; unacknowledged ones stay with this consumer).
   */
  setPaused(reason: string, paused: boolean): Promise<void> {
    if (paused) this.#pauseReasons.add(reason);
    else this.#pauseReasons.delete(reason);
    return this.#step(() => this.#applyPause());
  }

  /**
   * Acknowledges every message of `session` up to and including `tag`. Dropped
   * when that session is gone: those messages are redelivered.
   *
   * @returns whether the acknowledgement was sent
   */
  ack(session: number, tag: number): boolean {
    const channel = this.#channel;
    if (session !== this.#session || channel === undefined) return false;
    channel.ack({ fields: { deliveryTag: tag } } as ConsumeMessage, true);
    return true;
  }

  /**
   * Publishes `delivery` to the dead-letter exchange with the rejection in its
   * headers, and waits for the broker's confirm. Acknowledge it afterwards.
   */
  deadLetter(delivery: Delivery, rejection: Rejection): Promise<void> {
    const channel = this.#channel;
    if (delivery.session !== this.#session || channel === undefined) {
      return Promise.reject(new Error("session closed before dead-lettering"));
    }
    const names = BrokerConsumer.deadLetterNames(this.#options.queue);
    const id = crypto.randomUUID();
    return new Promise((resolve, reject) => {
      channel.publish(
        names.exchange,
        names.queue,
        Buffer.from(delivery.body.buffer, delivery.body.byteOffset, delivery.body.byteLength),
        {
          persistent: true,
          // Routed nowhere (the DLQ was deleted), the broker returns it before confirming, instead of dropping it.
          mandatory: true,
          contentType: delivery.contentType,
          headers: {
            ...delivery.headers,
            [REJECT_REASON_HEADER]: rejection.reason,
            [REJECT_DETAIL_HEADER]: rejection.detail.slice(0, 500),
            "x-original-queue": this.#options.queue,
            [DEAD_LETTER_ID_HEADER]: id,
          },
        },
        (error: unknown) => {
          const returned = this.#returned.delete(id);
          if (error) reject(error);
          else if (returned) {
            reject(new Error(`the broker returned the dead-letter publish: is ${names.queue} missing?`));
          } else resolve();
        },
      );
    });
  }

  /**
   * Drops the current connection so that recovery opens a new one. Used when
   * the broker refused something it must not (a dead-letter publish).
   */
  async reconnect(): Promise<void> {
    await this.#model?.close().catch(() => {});
  }

  /** Cancels the consumer, closes the channel and the connection; no reconnect after. */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#step(async () => {
      await this.#cancel();
      const channel = this.#channel;
      this.#channel = undefined;
      await channel?.close().catch(() => {});
    });
    await this.#connection?.close().catch(() => {});
  }

  #step(action: () => Promise<void>): Promise<void> {
    const next = this.#steps.then(action);
    this.#steps = next.catch(() => {});
    return next;
  }

  async #setup(model: ChannelModel): Promise<void> {
    const channel = await this.#openChannel(model);
    try {
      await this.#declare(model, channel).then((ch) => this.#adopt(model, ch));
    } catch (error) {
      await channel.close().catch(() => {});
      throw error;
    }
  }

  async #openChannel(model: ChannelModel): Promise<ConfirmChannel> {
    const channel = await model.createConfirmChannel();
    // A channel error is followed by 'close', where it is handled; without a listener it would be thrown.
    channel.on("error", (error: Error) => log.warn("Broker channel error: {error}", { error: error.message }));
    // A return comes before the confirm of the same publish: deadLetter's callback then sees it.
    channel.on("return", (message: ConsumeMessage) => {
      const id = message.properties.headers?.[DEAD_LETTER_ID_HEADER];
      if (typeof id === "string") this.#returned.add(id);
    });
    return channel;
  }

  /** Declares the topology; returns the channel to consume on (a new one if the queue check closed the first). */
  async #declare(model: ChannelModel, channel: ConfirmChannel): Promise<ConfirmChannel> {
    const { queue } = this.#options;
    try {
      await declareTopology(channel, this.#options);
      return channel;
    } catch (error) {
      if ((error as { code?: number }).code !== 406) throw error;
      // The queue exists with other arguments (e.g. the seed's plain durable queue): use it as it is.
      log.warn(
        "Queue {queue} exists with other arguments than {args}; using it as it is. Malformed messages still go to {dlq}, but messages the broker itself rejects are not dead-lettered: {error}",
        {
          queue,
          args: JSON.stringify(queueArguments(this.#options)),
          dlq: BrokerConsumer.deadLetterNames(queue).queue,
          error: (error as Error).message,
        },
      );
      const fresh = await this.#openChannel(model);
      await fresh.checkQueue(queue);
      return fresh;
    }
  }

  async #adopt(model: ChannelModel, channel: ConfirmChannel): Promise<void> {
    await channel.prefetch(this.#options.prefetch);
    const session = this.#session + 1;
    channel.on("close", () => {
      if (this.#channel !== channel) return;
      this.#channel = undefined;
      this.#consumerTag = undefined;
      if (!this.#closing) {
        log.warn("Broker channel closed; reconnecting");
        model.close().catch(() => {});
      }
    });
    this.#model = model;
    this.#channel = channel;
    this.#session = session;
    this.#consumerTag = undefined;
    await this.#step(() => this.#applyPause());
    log.info("Connected to RabbitMQ (session {session}, queue {queue}, prefetch {prefetch}, {state})", {
      session,
      queue: this.#options.queue,
      prefetch: this.#options.prefetch,
      state: this.paused ? "paused" : "consuming",
    });
    this.#options.onSessionChange?.(true);
  }

  #lost(error: Error): void {
    this.#channel = undefined;
    this.#consumerTag = undefined;
    this.#model = undefined;
    if (this.#closing) return;
    log.warn("Lost the RabbitMQ connection: {error}", { error: error.message });
    this.#options.onSessionChange?.(false);
  }

  async #applyPause(): Promise<void> {
    if (this.#closing) return;
    if (this.paused) await this.#cancel();
    else await this.#consume();
  }

  async #consume(): Promise<void> {
    const channel = this.#channel;
    if (channel === undefined || this.#consumerTag !== undefined) return;
    const session = this.#session;
    const onDelivery = this.#options.onDelivery;
    const reply = await channel.consume(this.#options.queue, (message) => {
      if (message === null) {
        // The server cancelled us (queue deleted, node down): start over.
        log.warn("Consumer cancelled by the broker; reconnecting");
        this.#consumerTag = undefined;
        this.#model?.close().catch(() => {});
        return;
      }
      onDelivery({
        body: message.content,
        tag: message.fields.deliveryTag,
        session,
        receivedAt: performance.now(),
        redelivered: message.fields.redelivered,
        headers: message.properties.headers,
        contentType: message.properties.contentType,
      });
    }, { noAck: false });
    this.#consumerTag = reply.consumerTag;
  }

  async #cancel(): Promise<void> {
    const channel: Channel | undefined = this.#channel;
    const tag = this.#consumerTag;
    if (channel === undefined || tag === undefined) return;
    this.#consumerTag = undefined;
    await channel.cancel(tag).catch((error: Error) => log.warn("Cancel failed: {error}", { error: error.message }));
  }
}
