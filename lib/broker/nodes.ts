/**
 * The broker's nodes: which one the next connection attempt goes to, and how long it waits.
 *
 * The list starts at a random node (so that instances spread over a cluster) and each failed
 * attempt or lost connection moves to the next one. Backoff is between full rounds, not between
 * nodes: after a lost connection the other nodes are tried at once, and only when every node
 * failed in a row does the service's exponential backoff apply (round 1, 2, … as attempt 1, 2, …
 * were with one node). With a single node every attempt is a round: the behaviour of one URL.
 *
 * It does not open connections ({@link ./connect.ts} does) nor know what a delay formula is
 * (it is given one).
 *
 * @example
 * ```ts
 * import { BrokerNodes } from "./nodes.ts";
 * const nodes = new BrokerNodes(["amqp://mq1", "amqp://mq2", "amqp://mq3"]);
 * nodes.current.address; // e.g. "mq2:5672"
 * nodes.advance();       // the next node, for the next attempt
 * ```
 *
 * @module
 */

import { hostPort } from "../config/url.ts";

/** One node, as amqplib's `connect` takes an object URL (read again at each attempt). */
export interface BrokerNode {
  /** `host:port`, as logs, `/status` and the `node` metric label show it. */
  address: string;
  protocol: "amqp" | "amqps";
  hostname: string;
  port: number;
  username: string;
  password: string;
  vhost: string;
  heartbeat?: number;
  frameMax?: number;
  channelMax?: number;
  locale?: string;
}

/** The nodes in the order they are tried; see the module documentation. */
export class BrokerNodes {
  readonly nodes: readonly BrokerNode[];
  #index: number;

  /**
   * @param urls one or more AMQP URLs (validated by the configuration)
   * @param random source of the starting node, in [0, 1) @default Math.random
   */
  constructor(urls: readonly string[], random: () => number = Math.random) {
    if (urls.length === 0) throw new Error("BrokerNodes needs at least one URL");
    this.nodes = urls.map(parseNode);
    this.#index = Math.floor(random() * this.nodes.length) % this.nodes.length;
  }

  /** The node the next (or current) connection is to. */
  get current(): BrokerNode {
    return this.nodes[this.#index];
  }

  /** Moves to the next node, round-robin; returns it. */
  advance(): BrokerNode {
    this.#index = (this.#index + 1) % this.nodes.length;
    return this.current;
  }

  /**
   * The wait before reconnect attempt `attempt` (1, 2, … since the last connection): 0 inside a
   * round, `roundDelay(round)` when a round of every node has failed.
   */
  delay(attempt: number, roundDelay: (round: number) => number): number {
    return attempt % this.nodes.length === 0 ? roundDelay(attempt / this.nodes.length) : 0;
  }
}

function parseNode(url: string): BrokerNode {
  const parsed = new URL(url);
  const protocol = parsed.protocol === "amqps:" ? "amqps" : "amqp";
  const hostname = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = parsed.port ? Number(parsed.port) : protocol === "amqps" ? 5671 : 5672;
  const query = parsed.searchParams;
  const int = (name: string) => query.has(name) ? Number(query.get(name)) : undefined;
  return {
    address: hostPort(hostname, port),
    protocol,
    hostname,
    port,
    // amqplib defaults both to guest only when both are missing, as for a URL string.
    username: decodeURIComponent(parsed.username || (parsed.password ? "" : "guest")),
    password: decodeURIComponent(parsed.password || (parsed.username ? "" : "guest")),
    // amqplib unescapes the vhost itself; an empty path is "/".
    vhost: parsed.pathname.length > 1 ? parsed.pathname.slice(1) : "",
    heartbeat: int("heartbeat"),
    frameMax: int("frameMax"),
    channelMax: int("channelMax"),
    locale: query.get("locale") ?? undefined,
  };
}
