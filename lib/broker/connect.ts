/**
 * Connecting: one recovering amqplib connection with the service's backoff,
 * and logs that say what is happening to it.
 *
 * It does not own what happens on a connection once it is open (`session.ts`).
 *
 * @module
 */

import amqp from "amqplib";
import type { ChannelModel, RecoveringChannelModel } from "amqplib";
import { redactUrl } from "../url.ts";
import { getLogger } from "../log.ts";

const log = getLogger("broker");

/** Options of {@link connectRecovering}. */
export interface ConnectOptions {
  url: string;
  /** PEM CA bundle path for amqps://. */
  caFile?: string;
  /** Attempts at the first connection before it fails. @default 5 */
  initialMaxRetries?: number;
  /** Sets up each new connection (channel, topology, consumer); a throw makes recovery try again. */
  setup: (model: ChannelModel) => Promise<void>;
  /** Told when an open connection is lost. */
  onDisconnect: (error: Error) => void;
}

/**
 * Connects with amqplib's recovery (exponential backoff with jitter, capped at
 * 30 s, for ever once connected) and resolves on the first connection.
 *
 * @throws when the first connection fails `initialMaxRetries` times; the message says what to check
 */
export async function connectRecovering(options: ConnectOptions): Promise<RecoveringChannelModel> {
  const { url, caFile } = options;
  const socketOptions = caFile ? { ca: [Deno.readTextFileSync(caFile)] } : {};
  let attempts = 0;
  const connection = await amqp.connect(url, {
    ...socketOptions,
    recovery: {
      initialDelay: 500,
      maxDelay: 30_000,
      factor: 2,
      jitter: 0.5,
      maxRetries: Infinity,
      initialMaxRetries: options.initialMaxRetries ?? 5,
      waitForConnect: false,
      setup: options.setup,
    },
  });
  connection.on("connect-failed", (error: Error) => {
    log.warn("Cannot connect to RabbitMQ at {url}: {error}", { url: redactUrl(url), error: error.message });
  });
  connection.on("disconnect", options.onDisconnect);
  connection.on("error", (error: Error) => log.warn("Broker connection error: {error}", { error: error.message }));
  connection.on("reconnect-scheduled", ({ attempt, delay }: { attempt: number; delay: number }) => {
    attempts = attempt;
    log.info("Reconnecting to RabbitMQ in {delay} ms (attempt {attempt})", { delay, attempt });
  });
  try {
    await connection.waitForConnect();
  } catch (error) {
    throw new Error(
      `Cannot connect to RabbitMQ at ${redactUrl(url)} after ${attempts + 1} attempt(s): ${
        (error as Error).message
      }. Is it running, and are RABBITMQ_HOST/RABBITMQ_PORT/RABBITMQ_USER right?`,
      { cause: error },
    );
  }
  return connection;
}
