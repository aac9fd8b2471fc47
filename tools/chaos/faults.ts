/**
 * Each fault's do and undo, on the soak's instances, its database and the
 * broker. Only what belongs to the soak is touched: its instances' proxies and
 * processes, the backends of its own database, the broker connections of its
 * own instances (found by their proxies' ports). The two machine-wide faults
 * (restart PostgreSQL, restart the RabbitMQ app) are planned only with
 * FAULT_RESTARTS=1 (see `scheduler.ts`), and wait for the server to be ready
 * again (`pg_isready`, `rabbitmqctl await_startup`) before their undo ends.
 *
 * @module
 */

import postgres from "postgres";
import {
  brokerConnectionsFrom,
  closeBrokerConnection,
  ensurePostgres,
  ensureRabbitMQ,
  pgctl,
  POSTGRES_URL,
  rabbitmqctl,
} from "../../tests/support/servers.ts";
import { admin } from "../../tests/support/service.ts";
import { delay } from "../../tests/support/wait.ts";
import type { Instances, Slot } from "./instances.ts";
import type { PlannedFault } from "./scheduler.ts";

/** What a fault acts on. */
export interface FaultContext {
  instances: Instances;
  /** The soak's database (its backends are the only ones terminated). */
  dbName: string;
  /** Reports a discrepancy (e.g. a SIGTERM that did not exit 0). */
  problem: (message: string) => void;
  /** Exit codes of the mid-run SIGTERMs, in order. */
  sigtermExits: number[];
}

/** A fault's two halves; `do` may return a note for the log. */
export interface FaultAction {
  do(): Promise<string | void> | void;
  undo(): Promise<void> | void;
}

/** The do and undo of `fault`. */
export function actionFor(fault: PlannedFault, context: FaultContext): FaultAction {
  const { instances } = context;
  const slot = fault.instance === undefined ? undefined : instances.slots[fault.instance];
  const none = () => {};
  switch (fault.kind) {
    case "kill":
      return {
        do: async () => `exit ${await instances.stop(slot!, "SIGKILL")}`,
        undo: () => instances.spawn(slot!),
      };
    case "sigterm":
      return {
        do: async () => {
          const busy = await untilMidBatch(slot!);
          const code = await instances.stop(slot!, "SIGTERM");
          context.sigtermExits.push(code);
          if (code !== 0) context.problem(`fault #${fault.id}: instance ${slot!.index} exited ${code} on SIGTERM`);
          return `exit ${code}${busy ? " (mid-batch)" : " (no batch open within 2 s)"}`;
        },
        undo: () => instances.spawn(slot!),
      };
    case "cut_broker":
      return { do: () => slot!.broker.cut(fault.mode), undo: () => slot!.broker.restore() };
    case "cut_db":
      return { do: () => slot!.db.cut(fault.mode), undo: () => slot!.db.restore() };
    case "pause": {
      let paused = slot?.service;
      return {
        do: async () => {
          paused = slot!.service;
          const answer = await admin(paused!, "/pause");
          return `${answer.status} ${JSON.stringify(answer.body)}`;
        },
        undo: async () => {
          // The same process (no process fault overlaps a pause on its instance).
          if (paused && paused === slot!.service) await admin(paused, "/resume");
        },
      };
    }
    case "slow_db":
      return {
        do: () => {
          for (const s of instances.slots) s.db.setLatency(fault.latencyMs ?? 50);
        },
        undo: () => {
          for (const s of instances.slots) s.db.setLatency(0);
        },
      };
    case "kill_backends":
      return { do: () => terminateBackends(context.dbName), undo: none };
    case "close_broker":
      return {
        do: async () => {
          const ports = new Set(instances.slots.flatMap((s) => s.broker.upstreamPorts));
          const ids = await brokerConnectionsFrom(ports);
          // At once (each rabbitmqctl takes a second or more): a gone one is already closed.
          await Promise.all(ids.map((id) => closeBrokerConnection(id).catch(() => {})));
          return `closed ${ids.length} connection(s)`;
        },
        undo: none,
      };
    case "restart_postgres":
      return {
        do: async () => {
          if (!await pgctl("restart", "--mode", "fast")) context.problem(`fault #${fault.id}: pg_ctlcluster failed`);
        },
        undo: ensurePostgres,
      };
    case "restart_broker":
      return { do: async () => void await rabbitmqctl("stop_app"), undo: ensureRabbitMQ };
  }
}

/** Terminates every backend of database `name` (and of no other), from a connection to `postgres`. */
async function terminateBackends(name: string): Promise<string> {
  const sql = postgres(POSTGRES_URL, { max: 1, onnotice: () => {} });
  try {
    const [{ n }] = await sql<{ n: number }[]>`
      select count(*) filter (where pg_terminate_backend(pid))::int as n
      from pg_stat_activity where datname = ${name} and pid <> pg_backend_pid()`;
    return `terminated ${n} backend(s)`;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** Waits (up to 2 s) until the instance has a batch open or committing; whether it saw one. */
async function untilMidBatch(slot: Slot): Promise<boolean> {
  const end = Date.now() + 2000;
  while (Date.now() < end) {
    const status = await slot.service!.status().catch(() => undefined);
    if (status && (status.open_batch_messages > 0 || status.inflight_batches > 0)) return true;
    await delay(5);
  }
  return false;
}
