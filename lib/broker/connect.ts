/**
 * Connecting: one recovering amqplib connection to one of the broker's nodes, with the service's
 * backoff between full rounds of nodes ({@link ./nodes.ts}), a deadline on every attempt, and logs
 * that say which node it is on; and the socket options (credentials, CA, deadline) every AMQP client
 * of this project connects with ({@link brokerSocketOptions}, also used by `tools/publish.ts`).
 *
 * It does not own what happens on a connection once it is open (`session.ts`).
 *
 * @module
 */

import amqp from "amqplib";
import type { ChannelModel, Options, RecoveringChannelModel } from "amqplib";
import { urlCredentials } from "../config/url.ts";
import { getLogger } from "../log.ts";
import { abortable, AbortedError, backoffDelay, RECONNECT_BACKOFF } from "../retry.ts";
import { withTimeout } from "../timeout.ts";
import { type BrokerNode, BrokerNodes } from "./nodes.ts";

const log = getLogger("broker");

/** Options of {@link connectRecovering}. */
export interface ConnectOptions {
  /** The nodes' URLs (one or more), tried from a random one on. */
  urls: readonly string[];
  /** PEM CA bundle path for amqps://. */
  caFile?: string;
  /** Longest wait for TCP, TLS, the AMQP handshake, and then the setup, of one attempt at one node. @default 10000 */
  timeoutMs?: number;
  /** Retries of the first connection, in rounds of every node, before it fails. @default Infinity (until `signal` aborts) */
  initialMaxRetries?: number;
  /** Once aborted, the first connection stops being attempted: {@link connectRecovering} throws an {@link AbortedError}. */
  signal?: AbortSignal;
  /** Sets up each new connection (channel, topology, consumer); a throw makes recovery try again. */
  setup: (model: ChannelModel, node: BrokerNode) => Promise<void>;
  /** Told when an open connection is lost. */
  onDisconnect: (error: Error, node: BrokerNode) => void;
}

/**
 * The broker's credentials from `url`, decoded as UTF-8. amqplib would decode the URL's user and password
 * as Latin-1, so that a non-ASCII password (percent-encoded UTF-8, as the configuration builds it) is refused.
 * No user and no password means guest/guest, as amqplib has it.
 */
export function brokerCredentials(url: string): ReturnType<typeof amqp.credentials.plain> {
  const { user, password } = urlCredentials(url);
  return user === "" && password === ""
    ? amqp.credentials.plain("guest", "guest")
    : amqp.credentials.plain(user, password);
}

/**
 * amqplib's socket options for `url`: the decoded credentials, the CA bundle for amqps://, and a
 * deadline (ms) on the TCP connection, TLS and the AMQP handshake (amqplib lifts it once open).
 */
export function brokerSocketOptions(url: string, caFile: string | undefined, timeoutMs: number) {
  return {
    credentials: brokerCredentials(url),
    timeout: timeoutMs,
    ...(caFile ? { ca: [Deno.readTextFileSync(caFile)] } : {}),
  };
}

/**
 * Connects with amqplib's recovery, for ever once connected, and resolves on the first connection.
 * Each failed attempt or lost connection moves to the next node at once; a full round of failures
 * waits the reconnect backoff (exponential with jitter, capped at 3 s: `RECONNECT_BACKOFF`, lib/retry.ts).
 *
 * @throws when every node failed `initialMaxRetries` + 1 rounds; the message says what to check
 * @throws {AbortedError} when `signal` aborts first (the connection is closed)
 */
export async function connectRecovering(options: ConnectOptions): Promise<RecoveringChannelModel> {
  const { caFile, timeoutMs = 10_000 } = options;
  const nodes = new BrokerNodes(options.urls);
  // amqplib reads an object URL again at each attempt: the target is moved from node to node. Its
  // user and password are the node's own, decoded (the socket options' credentials would win: left out).
  const target: Options.Connect & { address?: string } = { ...nodes.current };
  const { credentials: _sameForEveryNode, ...socketOptions } = brokerSocketOptions(
    options.urls[0],
    caFile,
    timeoutMs,
  );
  let attempts = 0;
  const connection = await amqp.connect(target, {
    ...socketOptions,
    recovery: {
      maxRetries: Infinity,
      initialMaxRetries: ((options.initialMaxRetries ?? Infinity) + 1) * nodes.nodes.length - 1,
      waitForConnect: false,
      calculateDelay: (attempt: number) => {
        Object.assign(target, nodes.advance());
        return nodes.delay(attempt, (round) => Math.round(backoffDelay(round, RECONNECT_BACKOFF)));
      },
      // A broker that opens the connection but never answers a channel or a declaration must not wedge it either.
      setup: (model: ChannelModel) =>
        withTimeout(
          options.setup(model, nodes.current),
          timeoutMs,
          `timed out after ${timeoutMs} ms setting up the channel and topology (CONNECT_TIMEOUT_SECONDS)`,
        ),
    },
  });
  connection.on("connect-failed", (error: Error) => {
    log.warn("Cannot connect to RabbitMQ node {node}: {error}", {
      node: nodes.current.address,
      error: describe(error, timeoutMs),
    });
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
    await abortable(connection.waitForConnect(), options.signal);
  } catch (error) {
    if (error instanceof AbortedError) {
      await withTimeout(connection.close(), 1000, "close").catch(() => {});
      throw error;
    }
    const tried = nodes.nodes.map((node) => node.address).join(", ");
    throw new Error(
      `Cannot connect to RabbitMQ at ${tried} after ${attempts + 1} attempt(s): ${
        describe(error as Error, timeoutMs)
      }. Is it running, and are RABBITMQ_HOST/RABBITMQ_PORT/RABBITMQ_USER (or RABBITMQ_URL) right?`,
      { cause: error },
    );
  }
  return connection;
}

/** amqplib's `connect ETIMEDOUT` (its socket deadline) said as what it is. */
function describe(error: Error, timeoutMs: number): string {
  return error.message === "connect ETIMEDOUT"
    ? `timed out after ${timeoutMs} ms waiting for the TCP connection, TLS or the AMQP handshake (CONNECT_TIMEOUT_SECONDS)`
    : error.message;
}
