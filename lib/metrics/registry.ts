/**
 * Metrics: the Prometheus registry and every metric on it. The seed's names
 * and labels are kept unchanged so existing dashboards keep working; the rest
 * are new (the live results' three are built in {@link ../results/metrics.ts}).
 * The label values a metric may take are {@link ./labels.ts}'s;
 * what is counted when is the pipeline's telemetry (`pipeline/telemetry.ts`).
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
import { STATE_NAMES } from "../pipeline/state.ts";
import { ERROR_TYPES, POOL_STATES, REJECT_REASONS } from "./labels.ts";
import { VERSION } from "../version.ts";
import { resultsMetrics, type ResultsStats } from "../results/metrics.ts";

export type { ResultsStats };

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
  resultsStreamClients: client.Gauge;
  resultsStreamEvents: client.Counter<"type">;
  resultsListenerReconnects: client.Counter;
  resultsRequests: client.Counter<"route">;
  /** Where the four `results_*` metrics are read from at a scrape (lib/service.ts sets it); unset: they stay 0. */
  resultsStats: (() => ResultsStats) | undefined;
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

/**
 * Creates the registry with every metric, and the default process metrics.
 *
 * @param collectDefaults add prom-client's process metrics (CPU, memory, event loop)
 */
export function createMetrics(collectDefaults = true): Metrics {
  const registry = new client.Registry();
  const registers = [registry];
  buildInfo(registry);
  if (collectDefaults) processMetrics(registry);
  const metrics: Metrics = {
    registry,
    resultsStats: undefined,
    votesAggregated: new client.Counter({
      name: "votes_aggregated_total",
      help: "Votes counted into vote_results, by law and choice",
      labelNames: ["law_id", "choice"],
      registers,
    }),
    currentVoteTotals: new client.Gauge({
      name: "current_vote_totals",
      help: "Vote totals in the database for each law touched since start, by choice",
      labelNames: ["law_id", "choice"],
      registers,
    }),
    batchProcessingDuration: new client.Gauge({
      name: "batch_processing_duration_seconds",
      help: "Seconds the last batch took from its close to its acknowledgement",
      registers,
    }),
    batchSizeProcessed: new client.Counter({
      name: "batch_size_processed_total",
      help: "Messages in all committed batches",
      registers,
    }),
    aggregationErrors: new client.Counter({
      name: "aggregation_errors_total",
      help: `Errors by type (${ERROR_TYPES.join(", ")})`,
      labelNames: ["error_type"],
      registers,
    }),
    batchCommitSeconds: new client.Histogram({
      name: "batch_commit_duration_seconds",
      help: "Seconds a batch's successful transaction took",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    batchSize: new client.Histogram({
      name: "batch_size_messages",
      help: "Messages per committed batch",
      buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000],
      registers,
    }),
    duplicateAttempts: new client.Counter({
      name: "duplicate_attempts_total",
      help: "Votes reusing a counted vote's hash with other content: recorded, not counted",
      registers,
    }),
    redeliveredNoops: new client.Counter({
      name: "redelivered_noops_total",
      help: "Copies of votes already counted (redeliveries): nothing to do",
      registers,
    }),
    deadLettered: new client.Counter({
      name: "dead_lettered_total",
      help: `Messages sent to the dead-letter queue, by reason (${REJECT_REASONS.join(", ")})`,
      labelNames: ["reason"],
      registers,
    }),
    consumerPaused: new client.Gauge({
      name: "consumer_paused",
      help: "1 while the consumer takes no messages (operator pause or database down)",
      registers,
    }),
    consumerState: new client.Gauge({
      name: "aggregator_state",
      help: "1 for the service's current state",
      labelNames: ["state"],
      registers,
    }),
    ready: new client.Gauge({
      name: "aggregator_ready",
      help: "1 while /readyz answers 200 (running, or paused by an operator); 0 while degraded or draining",
      registers,
    }),
    brokerReconnects: new client.Counter({
      name: "broker_reconnects_total",
      help: "Connections to RabbitMQ opened after the first",
      registers,
    }),
    brokerConnectedNode: new client.Gauge({
      name: "broker_connected_node",
      help: "1 for the RabbitMQ node (host:port) the service is connected to, 0 for the other configured nodes",
      labelNames: ["node"],
      registers,
    }),
    dbPoolConnections: new client.Gauge({
      name: "db_pool_connections",
      help: "Deprecated, use committing_batches: in_use is the batches committing, max the pool size",
      labelNames: ["state"],
      registers,
    }),
    committingBatches: new client.Gauge({
      name: "committing_batches",
      help: "Batches whose transaction is running now (at most MAX_INFLIGHT_BATCHES)",
      registers,
    }),
    oldestUnackedSeconds: new client.Gauge({
      name: "oldest_unacked_vote_age_seconds",
      help: "Age of the oldest message received and not yet acknowledged",
      registers,
    }),
    openBatchVotes: new client.Gauge({
      name: "open_batch_messages",
      help: "Messages in the batch being filled",
      registers,
    }),
    ...resultsMetrics(registers, () => metrics.resultsStats?.()),
  };
  // Every label value from the start, at 0: increase() and rate() see a series' first sample as its
  // start, so an event before a labelled series existed would be missed (the first dead letter, …).
  for (const type of ERROR_TYPES) metrics.aggregationErrors.inc({ error_type: type }, 0);
  for (const reason of REJECT_REASONS) metrics.deadLettered.inc({ reason }, 0);
  for (const state of STATE_NAMES) metrics.consumerState.set({ state }, 0);
  for (const state of POOL_STATES) metrics.dbPoolConnections.set({ state }, 0);
  return metrics;
}

/**
 * The registry of a results-only instance (`vote-aggregator results`): the process metrics and the live
 * results' three, none of the counting's (it counts nothing, so they would only read 0).
 */
export function createResultsMetrics(stats: () => ResultsStats | undefined): Pick<Metrics, "registry"> {
  const registry = new client.Registry();
  buildInfo(registry);
  processMetrics(registry);
  resultsMetrics([registry], stats);
  return { registry };
}

/** `vote_aggregator_build_info{version}` on `registry`: always 1, labelled with the running build's version. */
function buildInfo(registry: client.Registry): void {
  new client.Gauge({
    name: "vote_aggregator_build_info",
    help: "Always 1; its label is the running build's version (deno.json).",
    labelNames: ["version"],
    registers: [registry],
  }).set({ version: VERSION }, 1);
}

/** prom-client's process metrics (CPU, memory, event loop) on `registry`, as they read right under Deno. */
function processMetrics(registry: client.Registry): void {
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
}
