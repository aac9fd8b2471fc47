/**
 * Scaffolding of the live results tests (tests/results/): the service on a
 * scratch database and queue of its own, the wait for a results stream to show
 * given totals, and votes to count directly (`countVotes`, no broker).
 *
 * @example
 * ```ts
 * await using setup = await resultsService("h14_results");
 * const { db, queue, service } = setup;
 * await using stream = await openStream(`${service.url}/results/stream`);
 * await queue.publish(mix.bodies);
 * await untilTotals(stream, mix.expected);
 * ```
 *
 * @module
 */

import { isDeepStrictEqual } from "node:util";
import type { Choice, Vote } from "../../lib/vote.ts";
import { createTestDatabase, createTestQueue, type TestDatabase, type TestQueue } from "./servers.ts";
import { serviceEnv, type ServiceProcess, spawnService } from "./service.ts";
import type { SseClient } from "./sse.ts";
import { sha256 } from "./votes.ts";
import { waitForEvent } from "./wait.ts";

/** A service on a database and a queue of its own; disposed service, queue, then database. */
export interface ResultsService extends AsyncDisposable {
  db: TestDatabase;
  queue: TestQueue;
  /** The service, started with `serviceEnv`'s variables and the `env` given. */
  service: ServiceProcess;
  /** Another instance on the same database and queue, with `env` on top of `serviceEnv`'s; the caller disposes it. */
  spawn(env?: Record<string, string>): Promise<ServiceProcess>;
}

/** Starts a {@link ResultsService}: a scratch database, a queue named from `prefix`, the service on them with `env`. */
export async function resultsService(prefix: string, env: Record<string, string> = {}): Promise<ResultsService> {
  await using stack = new AsyncDisposableStack();
  const db = stack.use(await createTestDatabase());
  const queue = stack.use(await createTestQueue({ prefix }));
  const spawn = (more: Record<string, string> = {}) => spawnService(serviceEnv(db, queue, more));
  const service = stack.use(await spawn(env));
  const owned = stack.move();
  return { db, queue, service, spawn, [Symbol.asyncDispose]: () => owned.disposeAsync() };
}

/** Resolves when `stream`'s totals are `expected` ([oui, non] per law), checked at each event; rejects after `ms`. */
export function untilTotals(
  stream: SseClient,
  expected: Record<string, [number, number]>,
  ms = 60_000,
): Promise<void> {
  return waitForEvent(
    stream.changed,
    "event",
    () => isDeepStrictEqual(stream.totals(), expected),
    ms,
    () => `stream has ${JSON.stringify(stream.totals())}, expected ${JSON.stringify(expected)}`,
  );
}

/** `voter`'s vote on `lawId` as the pipeline hands it to `countVotes`: hashed from both, no citizen id, no timestamp. */
export function lawVote(voter: number, lawId: string, choice: Choice = "oui"): Vote {
  return { hash: sha256(`${voter}:${lawId}`), citizenId: null, lawId, choice, timestamp: null };
}
