/**
 * The live results' metrics: `results_stream_clients`, `results_stream_events_total{type}`,
 * `results_listener_reconnects_total` and `results_requests_total{route}`, which it registers on the registry it is given (the service's,
 * {@link ../metrics/registry.ts}). They are read at
 * each scrape from the counts the hub and the listener keep in plain numbers
 * ({@link ./live.ts} `stats()`), so a write to a stream client costs no metric update.
 *
 * @module
 */

import client from "prom-client";
import { RESULTS_ROUTES, type ResultsRoute, STREAM_EVENT_TYPES, type StreamEventType } from "../metrics/labels.ts";

/** The live results' counts, read at each scrape. */
export interface ResultsStats {
  /** Stream clients connected now. */
  clients: number;
  /** Events handed to stream clients since start, by type. */
  events: Record<StreamEventType, number>;
  /** Times the listening connection listened again after the first. */
  listenerReconnects: number;
  /** Requests that reached the results routes since start, by route. */
  requests: Record<ResultsRoute, number>;
}

/** The four metrics on `registers`, reading `stats()` at each scrape (undefined: no live results yet). */
export function resultsMetrics(registers: client.Registry[], stats: () => ResultsStats | undefined): {
  resultsStreamClients: client.Gauge;
  resultsStreamEvents: client.Counter<"type">;
  resultsListenerReconnects: client.Counter;
  resultsRequests: client.Counter<"route">;
} {
  // A counter goes up by what was added since the last scrape: how much `now` grew since then.
  const seen = new Map<string, number>();
  const growth = (key: string, now: number | undefined): number => {
    const before = seen.get(key) ?? 0;
    if (now === undefined) return 0;
    seen.set(key, now);
    return Math.max(0, now - before);
  };
  const resultsStreamEvents = new client.Counter({
    name: "results_stream_events_total",
    help: `Events sent to /results/stream clients, one per client, by type (${STREAM_EVENT_TYPES.join(", ")})`,
    labelNames: ["type"],
    registers,
    collect() {
      const events = stats()?.events;
      for (const type of STREAM_EVENT_TYPES) {
        const added = growth(type, events?.[type]);
        if (added > 0) this.inc({ type }, added);
      }
    },
  });
  // Every type from the start, at 0 (increase() sees a series' first sample as its start).
  for (const type of STREAM_EVENT_TYPES) resultsStreamEvents.inc({ type }, 0);
  const resultsRequests = new client.Counter({
    name: "results_requests_total",
    help: `Requests that reached the results routes, by route (${
      RESULTS_ROUTES.join(", ")
    }); a cache in front answers the rest`,
    labelNames: ["route"],
    registers,
    collect() {
      const requests = stats()?.requests;
      for (const route of RESULTS_ROUTES) {
        const added = growth(`request:${route}`, requests?.[route]);
        if (added > 0) this.inc({ route }, added);
      }
    },
  });
  for (const route of RESULTS_ROUTES) resultsRequests.inc({ route }, 0);
  return {
    resultsStreamClients: new client.Gauge({
      name: "results_stream_clients",
      help: "Clients connected to /results/stream",
      registers,
      collect() {
        this.set(stats()?.clients ?? 0);
      },
    }),
    resultsStreamEvents,
    resultsRequests,
    resultsListenerReconnects: new client.Counter({
      name: "results_listener_reconnects_total",
      help: "Times the live results' listening connection listened again after the first (each then resynchronises)",
      registers,
      collect() {
        const added = growth("reconnects", stats()?.listenerReconnects);
        if (added > 0) this.inc(added);
      },
    }),
  };
}
