/**
 * Metric label values: every value a labelled metric of the service may take,
 * so that each series can exist from the start at 0 and help texts list only
 * values that are emitted; and which `error_type` counts a rejected message.
 *
 * @example
 * ```ts
 * import { rejectionErrorType } from "./labels.ts";
 * rejectionErrorType("invalid_json"); // "json_decode", the seed's value
 * ```
 *
 * @module
 */

import type { RejectReason } from "../vote.ts";

/** Types of `results_stream_events_total{type}`: what the results stream sends its clients. */
export const STREAM_EVENT_TYPES = ["snapshot", "totals", "heartbeat"] as const;

/** A value of `results_stream_events_total{type}`. */
export type StreamEventType = typeof STREAM_EVENT_TYPES[number];

/**
 * Routes of `results_requests_total{route}`: the page (`/`), `/results`, `/results/{law_id}` and
 * `/results/stream`, each request that reaches the service (a cache in front answers the others).
 */
export const RESULTS_ROUTES = ["page", "results", "law", "stream"] as const;

/** A value of `results_requests_total{route}`. */
export type ResultsRoute = typeof RESULTS_ROUTES[number];

/** States of `db_pool_connections{state}`. */
export const POOL_STATES = ["in_use", "max"] as const;

/**
 * The `error_type` of `aggregation_errors_total` for each dead-letter reason: every rejected message is
 * counted there too, as the seed counted malformed messages. `json_decode` is the seed's own value for a
 * body that is not JSON; the seed had no finer reasons, so the other parse failures share `invalid_message`,
 * and a vote the database refuses (a poison message, isolated by splitting its batch) is `database_rejected`
 * — kept apart from `database`, which counts failed commit attempts. A Record, so that a reason added to
 * {@link RejectReason} does not compile until it has its error type here.
 */
const REJECTION_ERROR_TYPES = {
  oversized: "invalid_message",
  invalid_json: "json_decode",
  not_an_object: "invalid_message",
  missing_field: "invalid_message",
  invalid_field: "invalid_message",
  unknown_choice: "invalid_message",
  database_rejected: "database_rejected",
} as const satisfies Record<RejectReason, string>;

/** Every `reason` of `dead_lettered_total`: the {@link RejectReason} values. */
export const REJECT_REASONS = Object.keys(REJECTION_ERROR_TYPES) as RejectReason[];

/**
 * Every `error_type` of `aggregation_errors_total`: `database` (a failed commit attempt), `database_retry`
 * (a retry scheduled after one), `broker` (the broker connection lost), `dead_letter` (a dead-letter publish
 * failed; the message is redelivered), and the rejected messages' types (see {@link rejectionErrorType}).
 */
export const ERROR_TYPES = [
  "database",
  "database_retry",
  "broker",
  "dead_letter",
  "json_decode",
  "invalid_message",
  "database_rejected",
] as const;

/** A value of `aggregation_errors_total{error_type}`. */
export type ErrorType = typeof ERROR_TYPES[number];

/**
 * The `aggregation_errors_total` error type under which a rejected message is counted: the seed's
 * `json_decode` for a body that is not JSON, `invalid_message` for the other parse failures, and
 * `database_rejected` for a vote the database refuses.
 *
 * @example
 * ```ts
 * metrics.aggregationErrors.inc({ error_type: rejectionErrorType(rejection.reason) });
 * ```
 */
export function rejectionErrorType(reason: RejectReason): ErrorType {
  return REJECTION_ERROR_TYPES[reason];
}
