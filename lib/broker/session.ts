/**
 * The broker session: the RabbitMQ connection, its channel, and the consumer
 * of the vote queue, kept alive across failures.
 *
 * - Reconnects by itself (to the next node of a cluster; backoff, capped at 3 s, after each full round), re-declares
 *   the topology and consumes again, unless paused. Any channel error or cancelled consumer is a reconnect: one path.
 * - Every delivery carries the number of the session (connection) it came on. Delivery tags mean nothing on another
 *   channel, so acknowledgements for a session that is gone are dropped: those messages are redelivered, and the
 *   writer's deduplication makes the copies no-ops.
 * - Paused or not is one flag, set by the pipeline and kept across reconnects; why it is paused is the pipeline's
 *   business (`../pipeline/state.ts`).
 *
 * It does not own what is declared (`topology.ts`), what a dead-letter copy is (`dead_letter.ts`), nor the reconnect
 * backoff and the choice of node (`connect.ts`, `nodes.ts`).
 *
 * @example
 * ```ts
 * const broker = new BrokerSession({ urls: [url], queue: "votes.aggregation", prefetch: 100, queueType: "classic",
 *   deliveryLimit: 20, onDelivery: (d) => broker.ack(d.session, d.tag) });
 * await broker.start();
 * ```
 *
 * @module
 */

import type { ChannelModel, ConfirmChannel, ConsumeMessage, RecoveringChannelModel } from "amqplib";
import { getLogger } from "../log.ts";
import { MAX_BODY_BYTES, type Rejection } from "../vote.ts";
import { type ConnectOptions, connectRecovering } from "./connect.ts";
import { limitContent } from "./content_limit.ts";
import { DeadLetterPublisher } from "./dead_letter.ts";
import { type Delivery, toDelivery } from "./delivery.ts";
import { declareOrAdopt, type QueueOptions, warnAdopted } from "./topology.ts";

const log = getLogger("broker");

export type { Delivery };

/** Options of {@link BrokerSession}. */
export interface BrokerSessionOptions extends QueueOptions {
  urls: readonly string[];
  /** Unacknowledged messages the broker may push (bounds memory). */
  prefetch: number;
  /** PEM CA bundle path for amqps://. */
  caFile?: string;
  /** Receives every message, in delivery order. */
  onDelivery: (delivery: Delivery) => void;
  /** Told when a session opens (consuming or not) and when it is lost, with the node's `host:port`. */
  onSessionChange?: (connected: boolean, node: string) => void;
  /** The first connection's retries and each attempt's deadline (see `connect.ts`). */
  connect?: Pick<ConnectOptions, "initialMaxRetries" | "timeoutMs">;
  /** Largest body kept whole (`MAX_MESSAGE_BYTES`); of a larger one only this many first bytes. @default MAX_BODY_BYTES */
  maxMessageBytes?: number;
}

/** The session with the broker; see the module documentation. */
export class BrokerSession {
  readonly #options: BrokerSessionOptions;
  readonly #deadLetters: DeadLetterPublisher;
  #connection: RecoveringChannelModel | undefined;
  #model: ChannelModel | undefined;
  #channel: ConfirmChannel | undefined;
  #consumerTag: string | undefined;
  #node: string | undefined;
  #session = 0;
  #closing = false;
  #paused = false;
  // Pause, resume and (re)connect change the consumer one at a time, in order.
  #steps: Promise<void> = Promise.resolve();

  constructor(options: BrokerSessionOptions) {
    this.#options = options;
    this.#deadLetters = new DeadLetterPublisher(options.queue);
  }

  /** Number of the current session; 0 before the first connection. */
  get session(): number {
    return this.#session;
  }

  /** True while a channel is open. */
  get connected(): boolean {
    return this.#channel !== undefined;
  }
  /** `host:port` of the node the open session is on; `undefined` while disconnected. */
  get node(): string | undefined {
    return this.#channel === undefined ? undefined : this.#node;
  }

  /** True while messages are being consumed. */
  get consuming(): boolean {
    return this.#consumerTag !== undefined;
  }

  /** Connects, declares the topology and consumes (unless paused); resolves on the first connection, or rejects once `signal` aborts. */
  async start(signal?: AbortSignal): Promise<void> {
    this.#connection = await connectRecovering({
      urls: this.#options.urls,
      caFile: this.#options.caFile,
      ...this.#options.connect,
      signal,
      setup: (model, node) => this.#setup(model, node.address),
      onDisconnect: (error, node) => this.#lost(error, node.address),
    });
  }

  /**
   * Stops or restarts consumption; the flag survives reconnects. Resolves once the broker confirmed the change
   * (messages already delivered were handed to `onDelivery`; unacknowledged ones stay with this session).
   */
  setPaused(paused: boolean): Promise<void> {
    this.#paused = paused;
    return this.#step(() => this.#applyPause());
  }

  /**
   * Acknowledges every message of `session` up to and including `tag`. Dropped when that session is gone: those
   * messages are redelivered. @returns whether the acknowledgement was sent
   */
  ack(session: number, tag: number): boolean {
    const channel = this.#channel;
    if (session !== this.#session || channel === undefined) return false;
    channel.ack({ fields: { deliveryTag: tag } } as ConsumeMessage, true);
    return true;
  }

  /** A copy of `delivery` to the dead-letter queue, the rejection in its headers, confirmed; acknowledge it after. */
  deadLetter(delivery: Delivery, rejection: Rejection): Promise<void> {
    const channel = this.#channel;
    if (delivery.session !== this.#session || channel === undefined) {
      return Promise.reject(new Error("session closed before dead-lettering"));
    }
    return this.#deadLetters.publish(channel, delivery, rejection);
  }

  /** Drops the connection so that recovery opens a new one (the broker refused what it must not: a dead-letter copy). */
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

  async #setup(model: ChannelModel, node: string): Promise<void> {
    const { channel, adopted } = await declareOrAdopt(() => this.#openChannel(model), this.#options);
    if (adopted !== undefined) warnAdopted(this.#options, adopted);
    try {
      await this.#adopt(model, channel, node);
    } catch (error) {
      await channel.close().catch(() => {});
      throw error;
    }
  }

  async #openChannel(model: ChannelModel): Promise<ConfirmChannel> {
    const channel = await model.createConfirmChannel();
    limitContent(channel, this.#options.maxMessageBytes ?? MAX_BODY_BYTES);
    // A channel error is followed by 'close', where it is handled; without a listener it would be thrown.
    channel.on("error", (error: Error) => log.warn("Broker channel error: {error}", { error: error.message }));
    this.#deadLetters.watch(channel);
    return channel;
  }

  async #adopt(model: ChannelModel, channel: ConfirmChannel, node: string): Promise<void> {
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
    this.#node = node;
    this.#consumerTag = undefined;
    await this.#step(() => this.#applyPause());
    log.info("Connected to RabbitMQ node {node} (session {session}, queue {queue}, prefetch {prefetch}, {state})", {
      node,
      session,
      queue: this.#options.queue,
      prefetch: this.#options.prefetch,
      state: this.#paused ? "paused" : "consuming",
    });
    this.#options.onSessionChange?.(true, node);
  }

  #lost(error: Error, node: string): void {
    this.#channel = undefined;
    this.#consumerTag = undefined;
    this.#model = undefined;
    if (this.#closing) return;
    log.warn("Lost the RabbitMQ connection to node {node}: {error}", { node, error: error.message });
    this.#options.onSessionChange?.(false, node);
  }

  async #applyPause(): Promise<void> {
    if (this.#closing) return;
    if (this.#paused) await this.#cancel();
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
      onDelivery(toDelivery(message, session, this.#options.maxMessageBytes ?? MAX_BODY_BYTES));
    }, { noAck: false });
    this.#consumerTag = reply.consumerTag;
  }

  async #cancel(): Promise<void> {
    const channel = this.#channel;
    const tag = this.#consumerTag;
    if (channel === undefined || tag === undefined) return;
    this.#consumerTag = undefined;
    await channel.cancel(tag).catch((error: Error) => log.warn("Cancel failed: {error}", { error: error.message }));
  }
}
