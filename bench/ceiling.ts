/**
 * Phase 1, the ceiling: a bare amqplib consumer (parse JSON, acknowledge with
 * `multiple`, the service's prefetch) drains N preloaded votes. What the broker
 * and the client library can do on this machine, with no database at all.
 *
 * @module
 */

import amqp from "amqplib";
import { cpuSeconds } from "../tests/support/process.ts";
import { createTestQueue, RABBITMQ_URL } from "../tests/support/servers.ts";
import { generateVotes } from "../tools/publish.ts";
import { type Options, preload } from "./common.ts";
import { progress, type Row, say } from "./report.ts";

/** Runs the ceiling phase. */
export async function ceiling(options: Options, n: number, signal: AbortSignal): Promise<Row> {
  const label = "ceiling";
  await using queue = await createTestQueue();
  await preload(queue, generateVotes({ count: n, laws: options.laws }), label, signal);
  // Half the prefetch keeps deliveries flowing while an acknowledgement is on its way; never more than a batch.
  const ackEvery = Math.max(1, Math.min(options.batchSize, Math.floor(options.prefetch / 2)));
  const connection = await amqp.connect(RABBITMQ_URL);
  try {
    const channel = await connection.createChannel();
    await channel.prefetch(options.prefetch);
    const decoder = new TextDecoder();
    const done = Promise.withResolvers<number>();
    let received = 0;
    let parsed = 0;
    const start = performance.now();
    const cpuStart = cpuSeconds(Deno.pid)!;
    await channel.consume(queue.name, (message) => {
      if (message === null) return done.reject(new Error("the broker cancelled the bare consumer"));
      if (JSON.parse(decoder.decode(message.content)).vote_hash) parsed += 1;
      received += 1;
      if (received % ackEvery === 0 || received === n) channel.ack(message, true);
      if (received === n) done.resolve(performance.now());
      else if (received % 10_000 === 0) progress(`${label}: ${received}/${n}`);
    });
    const abort = () => done.reject(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    const end = await done.promise.finally(() => signal.removeEventListener("abort", abort));
    const consumerUs = (cpuSeconds(Deno.pid)! - cpuStart) / n * 1e6;
    const seconds = (end - start) / 1000;
    say(
      `${label}: ${n} messages in ${seconds.toFixed(2)} s (${
        Math.round(n / seconds)
      }/s), acknowledging every ${ackEvery}`,
    );
    if (parsed !== n) throw new Error(`the bare consumer parsed ${parsed} votes of ${n}`);
    return { phase: "ceiling (bare amqplib consumer)", n, seconds, rate: n / seconds, consumerUs, notes: [] };
  } finally {
    await connection.close().catch(() => {});
  }
}
