/**
 * Traces: one span per batch, from the start of its commit to its
 * acknowledgement, with what the batch held and what committing it took.
 *
 * Spans go through `npm:@opentelemetry/api`, which Deno's built-in
 * OpenTelemetry implements when the service runs with `OTEL_DENO=true`
 * (exported over OTLP/HTTP as the standard `OTEL_EXPORTER_OTLP_*` variables
 * say); without it every call is the API's no-op. Deno also traces each HTTP
 * request of the control plane (`Deno.serve`) by itself.
 *
 * | attribute | value |
 * | --- | --- |
 * | `batch.messages` | messages in the batch (its size) |
 * | `batch.votes` | of which votes (the rest were rejected on receipt) |
 * | `batch.laws` | laws the commit touched |
 * | `batch.counted`, `batch.duplicates`, `batch.redelivered` | as in `/status` totals |
 * | `batch.dead_lettered` | messages dead-lettered: rejected on receipt, or refused by the database |
 * | `batch.commit_attempts` | calls of the writer: 1 unless the database was down past the retry budget |
 * | `batch.transactions` | transactions of the successful call (more than 1 when a refused vote was isolated) |
 * | `batch.acknowledged` | false when a dead-letter copy failed: the batch is left to be redelivered |
 *
 * A batch abandoned at shutdown, or whose handling threw, ends with status ERROR.
 *
 * @module
 */

import { type Span, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Batch } from "./message.ts";
import type { Committed } from "./outage.ts";

/** Name of the batch spans. */
export const BATCH_SPAN = "batch";

const tracer = trace.getTracer("vote-aggregator");

/** The span of each batch being committed; see the module documentation. */
export class BatchTracer {
  readonly #spans = new WeakMap<Batch, Span>();

  /** The batch's commit starts. */
  started(batch: Batch): void {
    const span = tracer.startSpan(BATCH_SPAN);
    span.setAttributes({
      "batch.messages": batch.messages.length,
      "batch.votes": batch.messages.filter((m) => m.vote).length,
    });
    this.#spans.set(batch, span);
  }

  /** The batch was committed, dead-lettered what it had to and acknowledged (or left for redelivery). */
  committed(batch: Batch, { result, attempts }: Committed): void {
    this.#end(batch, (span) =>
      span.setAttributes({
        "batch.laws": result.laws.length,
        "batch.counted": result.counted,
        "batch.duplicates": result.duplicates,
        "batch.redelivered": result.redelivered,
        "batch.dead_lettered": batch.messages.filter((m) => m.deadLettered).length,
        "batch.commit_attempts": attempts,
        "batch.transactions": result.transactions,
        "batch.acknowledged": batch.ackable,
      }));
  }

  /** The batch did not get through: abandoned at shutdown, or its handling threw. */
  failed(batch: Batch, why: string | Error): void {
    this.#end(batch, (span) => {
      if (why instanceof Error) span.recordException(why);
      span.setStatus({ code: SpanStatusCode.ERROR, message: why instanceof Error ? why.message : why });
    });
  }

  /** Awaits `step` of the batch's handling; if it throws, the span ends as {@link failed} and it rethrows. */
  async failing<T>(batch: Batch, step: Promise<T>): Promise<T> {
    try {
      return await step;
    } catch (error) {
      this.failed(batch, error as Error);
      throw error;
    }
  }

  #end(batch: Batch, describe: (span: Span) => void): void {
    const span = this.#spans.get(batch);
    if (!span) return;
    this.#spans.delete(batch);
    describe(span);
    span.end();
  }
}
