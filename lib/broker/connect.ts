/**
 * Connecting: one recovering amqplib connection to one of the broker's nodes, with the service's
 * backoff between full rounds of nodes ({@link ./nodes.ts}), and logs that say which node it is on.
 *
 * It does not own what happens on a connection once it is open (`session.ts`).
 *
 * @module
 */

import amqp from "amqplib";
import type { ChannelModel, Options, RecoveringChannelModel } from "amqplib";
import { getLogger } from "../log.ts";
import { backoffDelay } from "../retry.ts";
import { type BrokerNode, BrokerNodes } from "./nodes.ts";

const log = getLogger("broker");

/** Longest a TCP connect and AMQP handshake to one node may take before the next node is tried. */
const NODE_CONNECT_TIMEOUT_MS = 5_000;

/** Options of {@link connectRecovering}. */
export interface ConnectOptions {
  /** The nodes' URLs (one or more), tried from a random one on. */
  urls: readonly string[];
  /** PEM CA bundle path for amqps://. */
  caFile?: string;
  /** Rounds of attempts at the first connection (each round tries every node) before it fails. @default 6 */
  initialRounds?: number;
  /** Sets up each new connection (channel, topology, consumer); a throw makes recovery try again. */
  setup: (model: ChannelModel, node: BrokerNode) => Promise<void>;
  /** Told when an open connection is lost. */
  onDisconnect: (error: Error, node: BrokerNode) => void;
}

/**
 * Connects with amqplib's recovery, for ever once connected, and resolves on the first connection.
 * Each failed attempt or lost connection moves to the next node; a full round of failures waits
 * an exponential backoff with jitter (from 0.5 s, capped at 30 s).
 *
 * @throws when every node failed `initialRounds` rounds in a row; the message says what to check
 */
export async function connectRecovering(options: ConnectOptions): Promise<RecoveringChannelModel> {
  const nodes = new BrokerNodes(options.urls);
  const socketOptions = {
    timeout: NODE_CONNECT_TIMEOUT_MS,
    ...(options.caFile ? { ca: [Deno.readTextFileSync(options.caFile)] } : {}),
  };
  // amqplib reads an object URL again at each attempt: the target is moved from node to node.
  const target: Options.Connect & { address?: string } = { ...nodes.current };
  let attempts = 0;
  const connection = await amqp.connect(target, {
    ...socketOptions,
    recovery: {
      maxRetries: Infinity,
      initialMaxRetries: (options.initialRounds ?? 6) * nodes.nodes.length - 1,
      waitForConnect: false,
      calculateDelay: (attempt: number) => {
        Object.assign(target, nodes.advance());
        return nodes.delay(
          attempt,
          (round) => Math.round(backoffDelay(round, { minDelayMs: 500, maxDelayMs: 30_000, jitter: 0.5 })),
        );
      },
      setup: (model: ChannelModel) => options.setup(model, nodes.current),
    },
  });
  connection.on("connect-failed", (error: Error) => {
    log.warn("Cannot connect to RabbitMQ node {node}: {error}", { node: nodes.current.address, error: error.message });
  });
  connection.on("disconnect", (error: Error) => options.onDisconnect(error, nodes.current));
  connection.on("error", (error: Error) => log.warn("Broker connection error: {error}", { error: error.message }));
  connection.on("reconnect-scheduled", ({ attempt, delay }: { attempt: number; delay: number }) => {
    attempts = attempt;
    log.info("Reconnecting to RabbitMQ node {node} in {delay} ms (attempt {attempt})", {
      node: nodes.current.address,
      delay,
      attempt,
    });
  });
  try {
    await connection.waitForConnect();
  } catch (error) {
    const tried = nodes.nodes.map((node) => node.address).join(", ");
    throw new Error(
      `Cannot connect to RabbitMQ at ${tried} after ${attempts + 1} attempt(s): ${(error as Error).message}. ` +
        "Is it running, and are RABBITMQ_HOST/RABBITMQ_PORT/RABBITMQ_USER (or RABBITMQ_URL) right?",
      { cause: error },
    );
  }
  return connection;
}
