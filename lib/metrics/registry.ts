/**
 * Metrics: the Prometheus registry and the service's metrics on it. The seed's
 * names and labels are kept unchanged so existing dashboards keep working; the
 * rest are new. The label values a metric may take are {@link ./labels.ts}'s;
 * what is counted when is the pipeline's telemetry (`pipeline/telemetry.ts`),
 * which also gives `aggregator_state` a series for each state it knows. A part
 * with metrics of its own registers them on this registry itself (the live
 * results: `results/metrics.ts`): the registry does not know its users.
 *
 * @example
 * ```ts
 * import { createMetrics } from "./registry.ts";
 * const metrics = createMetrics();
 * metrics.deadLettered.inc({ reason: "invalid_json" });
 * console.log(await metrics.registry.metrics());
 * ```
 *
 * @module
 */

import client from "prom-client";
import { ERROR_TYPES, POOL_STATES, REJECT_REASONS } from "./labels.ts";
import { VERSION } from "../version.ts";

/** The service's metrics, on their own registry. */
export interface Metrics {
  registry: client.Registry;
  // The seed's five.
  /** Votes counted, by law and choice. */
  votesAggregated: client.Counter<"law_id" | "choice">;
  /** The database's totals, refreshed from what each commit returns. */
  currentVoteTotals: client.Gauge<"law_id" | "choice">;
  /** Seconds the last batch took from its close to its acknowledgement (the seed's "time to process last batch"). */
  batchProcessingDuration: client.Gauge;
  /** Messages in all committed batches. */
  batchSizeProcessed: client.Counter;
  /** Errors by type: one of `ERROR_TYPES` (metric_labels.ts). */
  aggregationErrors: client.Counter<"error_type">;
  // New.
  batchCommitSeconds: client.Histogram;
  batchSize: client.Histogram;
  duplicateAttempts: client.Counter;
  redeliveredNoops: client.Counter;
  deadLettered: client.Counter<"reason">;
  consumerPaused: client.Gauge;
  /** 1 for the service's current state, 0 for the others: the pipeline sets each state it has. */
  consumerState: client.Gauge<"state">;
  /** 1 while `/readyz` answers 200. */
  ready: client.Gauge;
  brokerReconnects: client.Counter;
  /** 1 for the broker node (`host:port`) the session is on, 0 for the other configured nodes. */
  brokerConnectedNode: client.Gauge<"node">;
  /** Deprecated (one release): `in_use` is {@link committingBatches}, `max` the pool size. */
  dbPoolConnections: client.Gauge<"state">;
  committingBatches: client.Gauge;
  oldestUnackedSeconds: client.Gauge;
  openBatchVotes: client.Gauge;
}

// prom-client's default metrics that come from /proc/self on Linux (see createMetrics).
const LINUX_PROC_METRICS = [
  "process_resident_memory_bytes",
  "process_virtual_memory_bytes",
  "process_heap_bytes",
  "process_open_fds",
  "process_max_fds",
];

// prom-client's default gauges whose names end in _total, which `promtool check metrics` rejects ("non-counter
// metrics should not have _total suffix"). Each is the sum over the `type` label of the gauge of the same name
// without the suffix (nodejs_active_handles{type} …), which stays: sum() of it gives the same number.
const TOTAL_SUFFIXED_GAUGES = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

const COMMIT_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BATCH_SIZE_BUCKETS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/**
 * Creates the registry with the service's metrics, and the default process metrics.
 *
 * @param collectDefaults add prom-client's process metrics (CPU, memory, event loop)
 */
export function createMetrics(collectDefaults = true): Metrics {
  const registry = createProcessRegistry(collectDefaults);
  const registers = [registry];
  const counter = <L extends string = string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new client.Counter<L>({ name, help, labelNames, registers });
  const gauge = <L extends string = string>(name: string, help: string, labelNames: readonly L[] = []) =>
    new client.Gauge<L>({ name, help, labelNames, registers });
  const histogram = (name: string, help: string, buckets: number[]) =>
    new client.Histogram({ name, help, buckets, registers });
  const metrics: Metrics = {
    registry,
    votesAggregated: counter(
      "votes_aggregated_total",
      "Votes counted into vote_results, by law and choice",
      ["law_id", "choice"],
    ),
    currentVoteTotals: gauge(
      "current_vote_totals",
      "Vote totals in the database for each law touched since start, by choice",
      ["law_id", "choice"],
    ),
    batchProcessingDuration: gauge(
      "batch_processing_duration_seconds",
      "Seconds the last batch took from its close to its acknowledgement",
    ),
    batchSizeProcessed: counter("batch_size_processed_total", "Messages in all committed batches"),
    aggregationErrors: counter(
      "aggregation_errors_total",
      `Errors by type (${ERROR_TYPES.join(", ")})`,
      ["error_type"],
    ),
    batchCommitSeconds: histogram(
      "batch_commit_duration_seconds",
      "Seconds a batch's successful transaction took",
      COMMIT_SECONDS_BUCKETS,
    ),
    batchSize: histogram("batch_size_messages", "Messages per committed batch", BATCH_SIZE_BUCKETS),
    duplicateAttempts: counter(
      "duplicate_attempts_total",
      "Votes reusing a counted vote's hash with other content: recorded, not counted",
    ),
    redeliveredNoops: counter(
      "redelivered_noops_total",
      "Copies of votes already counted (redeliveries): nothing to do",
    ),
    deadLettered: counter(
      "dead_lettered_total",
      `Messages sent to the dead-letter queue, by reason (${REJECT_REASONS.join(", ")})`,
      ["reason"],
    ),
    consumerPaused: gauge(
      "consumer_paused",
      "1 while the consumer takes no messages (operator pause or database down)",
    ),
    consumerState: gauge("aggregator_state", "1 for the service's current state", ["state"]),
    ready: gauge(
      "aggregator_ready",
      "1 while /readyz answers 200 (running, or paused by an operator); 0 while degraded or draining",
    ),
    brokerReconnects: counter("broker_reconnects_total", "Connections to RabbitMQ opened after the first"),
    brokerConnectedNode: gauge(
      "broker_connected_node",
      "1 for the RabbitMQ node (host:port) the service is connected to, 0 for the other configured nodes",
      ["node"],
    ),
    dbPoolConnections: gauge(
      "db_pool_connections",
      "Deprecated, use committing_batches: in_use is the batches committing, max the pool size",
      ["state"],
    ),
    committingBatches: gauge(
      "committing_batches",
      "Batches whose transaction is running now (at most MAX_INFLIGHT_BATCHES)",
    ),
    oldestUnackedSeconds: gauge(
      "oldest_unacked_vote_age_seconds",
      "Age of the oldest message received and not yet acknowledged",
    ),
    openBatchVotes: gauge("open_batch_messages", "Messages in the batch being filled"),
  };
  // Every label value from the start, at 0: increase() and rate() see a series' first sample as its
  // start, so an event before a labelled series existed would be missed (the first dead letter, …).
  for (const type of ERROR_TYPES) metrics.aggregationErrors.inc({ error_type: type }, 0);
  for (const reason of REJECT_REASONS) metrics.deadLettered.inc({ reason }, 0);
  for (const state of POOL_STATES) metrics.dbPoolConnections.set({ state }, 0);
  return metrics;
}

/**
 * A registry with what every process of this service shows: `vote_aggregator_build_info`, and prom-client's
 * process metrics (CPU, memory, event loop) as they read right under Deno. {@link createMetrics} adds the
 * counting's metrics to it; a results-only instance (`../results/only.ts`) only the live results'.
 *
 * @param collectDefaults add the process metrics
 */
export function createProcessRegistry(collectDefaults = true): client.Registry {
  const registry = new client.Registry();
  new client.Gauge({
    name: "vote_aggregator_build_info",
    help: "Always 1; its label is the running build's version (deno.json).",
    labelNames: ["version"],
    registers: [registry],
  }).set({ version: VERSION }, 1);
  if (!collectDefaults) return registry;
  client.collectDefaultMetrics({ register: registry });
  for (const name of TOTAL_SUFFIXED_GAUGES) registry.removeSingleMetric(name);
  // prom-client reads these from /proc/self on Linux, which Deno allows only under --allow-all: under
  // the service's permission set they would read 0. Resident memory comes from Deno instead (no
  // permission needed); the others are left out rather than reported wrong.
  for (const name of LINUX_PROC_METRICS) registry.removeSingleMetric(name);
  new client.Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers: [registry],
    collect() {
      this.set(Deno.memoryUsage().rss);
    },
  });
  return registry;
}
