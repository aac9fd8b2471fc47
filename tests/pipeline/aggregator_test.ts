import assert from "node:assert/strict";
import type { Delivery } from "../../lib/broker/delivery.ts";
import { Aggregator, type Broker, type Writer } from "../../lib/pipeline/aggregator.ts";
import { fakeDelivery } from "../support/deliveries.ts";
import { waitForEvent } from "../support/wait.ts";
import { createMetrics } from "../../lib/metrics/registry.ts";
import type { Vote } from "../../lib/vote.ts";
import type { CommitResult } from "../../lib/database/writer.ts";

// Unit tests of the pipeline's ordering rules, with an in-memory broker and writer that record what
// happens; the same rules against the real RabbitMQ and PostgreSQL are in service_test.ts and faults_test.ts.

function recordingBroker() {
  const acks: number[] = [];
  const broker: Broker = {
    session: 1,
    connected: true,
    consuming: true,
    ack: (_session, tag) => (acks.push(tag), true),
    deadLetter: () => Promise.resolve(),
    setPaused: () => Promise.resolve(),
    reconnect: () => Promise.resolve(),
  };
  return { broker, acks };
}

/** A writer whose commits finish when the test says so. */
function gatedWriter() {
  const log: string[] = [];
  const gates: PromiseWithResolvers<void>[] = [];
  const writer: Writer = {
    async commit(votes: Vote[]): Promise<CommitResult> {
      const name = votes.map((v) => `${v.hash.slice(0, 1)}${v.choice}`).join("+");
      const gate = Promise.withResolvers<void>();
      gates.push(gate);
      log.push(`start ${name}`);
      await gate.promise;
      log.push(`end ${name}`);
      return { counted: votes.length, duplicates: 0, redelivered: 0, laws: [], rejected: [], transactions: 1 };
    },
  };
  return { writer, log, gates };
}

let tag = 0;
function delivery(hashChar: string, choice: string): Delivery {
  return fakeDelivery(JSON.stringify({ vote_hash: hashChar.repeat(64), law_id: "L1", choice }), { tag: ++tag });
}

/** An aggregator of one-vote batches on {@link recordingBroker} and {@link gatedWriter}; tags start again at 1. */
function gatedAggregator(maxInflightBatches: number) {
  tag = 0;
  const { broker, acks } = recordingBroker();
  const { writer, log, gates } = gatedWriter();
  const aggregator = new Aggregator({
    broker,
    writer,
    metrics: createMetrics(false),
    batchSize: 1,
    batchTimeoutMs: 60_000,
    maxInflightBatches,
  });
  return { aggregator, acks, log, gates };
}

Deno.test("aggregator: batches commit concurrently but are acknowledged in delivery order", async () => {
  const { aggregator, acks, log, gates } = gatedAggregator(2);
  aggregator.receive(delivery("a", "oui"));
  aggregator.receive(delivery("b", "non"));
  assert.deepEqual(log, ["start aoui", "start bnon"], "two unrelated batches commit at once");
  gates[1].resolve();
  await waitForEvent(aggregator, "acked", () => log.includes("end bnon"));
  assert.deepEqual(acks, [], "the second batch waits for the first before its acknowledgement");
  gates[0].resolve();
  await waitForEvent(aggregator, "acked", () => acks.length === 2);
  assert.deepEqual(acks, [1, 2]);
});

Deno.test("aggregator: a batch holding a hash that is still committing waits (first copy wins)", async () => {
  const { aggregator, acks, log, gates } = gatedAggregator(4);
  aggregator.receive(delivery("a", "oui"));
  aggregator.receive(delivery("a", "non"));
  assert.deepEqual(log, ["start aoui"], "the later copy does not commit alongside the first");
  gates[0].resolve();
  await waitForEvent(aggregator, "acked", () => log.includes("start anon"));
  assert.deepEqual(log, ["start aoui", "end aoui", "start anon"]);
  gates[1].resolve();
  await waitForEvent(aggregator, "acked", () => acks.length === 2);
});
