/**
 * `--recovery S`: how fast the service, started as `deno task start` starts it, follows its servers, with the
 * database and the broker behind TCP proxies of their own (tests/support/proxy.ts). One row each, the time in ms:
 *
 * - readiness: from a cut (connections refused) of an idle instance's database, then broker, to `/readyz` 503
 *   naming it, and from the restore to 200 (the target: 5 s);
 * - `POST /pause` during a database outage with votes in flight (the target: 1 s);
 * - counting resumed: a broker outage, then a database outage of S seconds each with votes waiting, from the
 *   restore to the last of them visible in `vote_results` (the target: 5 s, however long the outage).
 *
 * Each is measured once: a row says what one outage took, not a distribution.
 *
 * @module
 */

import { TcpProxy, viaPort } from "../tests/support/proxy.ts";
import { createTestDatabase, createTestQueue, POSTGRES_URL, RABBITMQ_URL, results } from "../tests/support/servers.ts";
import { admin, ADMIN_TOKEN, call, spawnService } from "../tests/support/service.ts";
import { seedVote } from "../tests/support/votes.ts";
import { benchEnv, type Options, SHUTDOWN_GRACE_MS, sleep } from "./common.ts";
import { type Row, say } from "./report.ts";

const POLL_MS = 20;

/** Runs the recovery phase with outages of `outageSeconds`. */
export async function recovery(options: Options, outageSeconds: number, signal: AbortSignal): Promise<Row[]> {
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  await using database = new TcpProxy(Number(new URL(POSTGRES_URL).port || 5432));
  await using broker = new TcpProxy(Number(new URL(RABBITMQ_URL).port || 5672));
  await using service = await spawnService(
    benchEnv(options, { url: viaPort(db.url, database.port) }, queue, {
      RABBITMQ_URL: viaPort(RABBITMQ_URL, broker.port),
      ADMIN_TOKEN,
    }),
    { viaStartTask: true, waitHealthy: false },
  );
  /** Milliseconds until `done()` holds, polled. */
  const until = async (done: () => Promise<boolean>, what: string, limitMs = 120_000): Promise<number> => {
    const start = performance.now();
    for (;;) {
      if (await done().catch(() => false)) return performance.now() - start;
      if (service.exitCode !== undefined) throw new Error(`the service exited with ${service.exitCode}`);
      if (performance.now() - start > limitMs) throw new Error(`${what}: not within ${limitMs} ms`);
      await sleep(POLL_MS, signal);
    }
  };
  const readyz = async (expected: RegExp | null) => {
    const { status, body } = await call(service, "/readyz");
    return expected === null ? status === 200 : status === 503 && expected.test(body.reason ?? "");
  };
  const counted = async (law: string, n: number) => (await results(db.sql))[law]?.[0] === n;
  await until(() => readyz(null), "ready at start");

  const rows: Row[] = [];
  const row = (phase: string, ms: number, target: number) => {
    say(`recovery: ${phase}: ${Math.round(ms)} ms`);
    const met = ms < target ? "within" : "**over**";
    rows.push({
      phase: `recovery: ${phase}`,
      n: 1,
      max: ms,
      notes: [`recovery: ${phase}: ${met} its ${target} ms target`],
    });
  };

  await database.cut();
  row("idle, database cut → /readyz 503", await until(() => readyz(/^database: /), "database down"), 5000);
  database.restore();
  row("idle, database back → /readyz 200", await until(() => readyz(null), "database back"), 5000);
  await broker.cut();
  row("idle, broker cut → /readyz 503", await until(() => readyz(/^broker: /), "broker down"), 5000);
  broker.restore();
  row("idle, broker back → /readyz 200", await until(() => readyz(null), "broker back"), 5000);

  await database.cut();
  await queue.publish(Array.from({ length: 5 }, (_, i) => seedVote(i, "PAUSE", "oui")));
  await until(async () => (await queue.info()).unacked === 5, "votes delivered");
  const asked = performance.now();
  const paused = await admin(service, "/pause");
  if (paused.status !== 200) throw new Error(`POST /pause answered ${paused.status}`);
  row("POST /pause, database down", performance.now() - asked, 1000);
  database.restore();
  await until(() => counted("PAUSE", 5), "the paused batch committed");
  await admin(service, "/resume");

  await broker.cut();
  await queue.publish(Array.from({ length: 5 }, (_, i) => seedVote(100 + i, "BROKER", "oui")));
  await sleep(outageSeconds * 1000, signal);
  broker.restore();
  row(`broker back after ${outageSeconds} s → counted`, await until(() => counted("BROKER", 5), "counted"), 5000);

  await database.cut();
  await queue.publish(Array.from({ length: 5 }, (_, i) => seedVote(200 + i, "DATABASE", "oui")));
  await until(() => readyz(/^database: commits fail/), "commits failing");
  await sleep(outageSeconds * 1000, signal);
  database.restore();
  row(`database back after ${outageSeconds} s → counted`, await until(() => counted("DATABASE", 5), "counted"), 5000);

  const code = await service.stopWithin(SHUTDOWN_GRACE_MS);
  if (code !== 0) throw new Error(`the service exited with ${code}`);
  return rows;
}
