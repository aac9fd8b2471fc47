/**
 * The viewers phase (`--viewers N`): the drain of N preloaded messages
 * (subscribers.ts `watchedDrain`) once unwatched and once watched by `N`
 * viewers through nginx, in one run: a results-only instance (`main.ts
 * results`, as the read-only role of sql/role_results_reader.sql) reads the
 * database, Debian's nginx runs the shipped deploy/nginx/results.conf in front
 * of it (tests/support/nginx.ts), and the viewers poll `/results` and
 * `/results/LAW-001` through nginx with conditional requests, each as fast as its
 * answers come or every `--viewer-interval` ms (tests/support/viewers.ts). Reported: the viewers' requests per
 * second nginx served, the requests that reached the results-only instance
 * (`results_requests_total`), the staleness of what the viewers saw (p50, p99,
 * max: from the bench's own LISTEN), and the drain rate with and without them.
 *
 * The viewers, nginx, both instances and PostgreSQL share this machine's cores:
 * on a small machine the drain slows by the CPU they take, not by anything the
 * counting instance does for them (it serves no viewer).
 *
 * @module
 */

import { startNginx } from "../tests/support/nginx.ts";
import { freePort, metric, type ServiceProcess, spawnService } from "../tests/support/service.ts";
import { CommitLog, quantile, startViewers, type Viewers } from "../tests/support/viewers.ts";
import type { Options } from "./common.ts";
import type { Row } from "./report.ts";
import { progress } from "./report.ts";
import { type Audience, watchedDrain } from "./subscribers.ts";

/** The whole table, and one law of benchMix's (tools/publish.ts names them LAW-001, …). */
const ROUTES = ["/results", "/results/LAW-001"];
const ROLE_SCRIPT = new URL("../sql/role_results_reader.sql", import.meta.url);

/** The two runs: the drain alone, then the drain with `options.viewers` viewers through nginx. */
export async function viewers(options: Options, signal: AbortSignal): Promise<Row[]> {
  const without = await watchedDrain(options, "drain, no viewer", undefined, signal);
  const pace = options.viewerIntervalMs ? `, each every ${options.viewerIntervalMs} ms` : "";
  const label = `drain, ${options.viewers} viewers through nginx${pace}`;
  const audience = viewerAudience(options.viewers, options.viewerIntervalMs, label);
  const withThem = await watchedDrain(options, label, audience, signal);
  const change = (withThem.rate! / without.rate! - 1) * 100;
  withThem.notes.push(
    `viewers: drain rate ${Math.round(withThem.rate!)} votes/s with ${options.viewers} viewers through nginx, ` +
      `${Math.round(without.rate!)} without (${change >= 0 ? "+" : ""}${change.toFixed(1)} %)`,
  );
  return [without, withThem];
}

function viewerAudience(count: number, intervalMs: number, label: string): Audience {
  const held = new AsyncDisposableStack();
  let reader: ServiceProcess;
  let crowd: Viewers;
  let log: CommitLog;
  let before: number[];
  const reached = () =>
    Promise.all(["results", "law"].map((route) => metric(reader, "results_requests_total", { route })));
  return {
    async open(_service, db) {
      await db.sql.unsafe(await Deno.readTextFile(ROLE_SCRIPT));
      const url = new URL(db.url);
      url.username = "vote_results_reader";
      reader = held.use(
        await spawnService({
          RESULTS_DATABASE_URL: url.toString(),
          DATABASE_URL: url.toString(),
          POSTGRES_SSLMODE: "disable",
          PROMETHEUS_PORT: String(freePort()),
        }, { args: ["results"] }),
      );
      const proxy = held.use(await startNginx({ upstream: new URL(reader.url).host }));
      log = held.use(await CommitLog.listen(db.url));
      before = await reached();
      crowd = startViewers({ url: proxy.url, count, paths: ROUTES, intervalMs });
      progress(`${label}: ${count} viewers polling through nginx`, true);
    },
    async close() {
      const report = await crowd.stop(log);
      const after = await reached();
      await reader.stop();
      await held.disposeAsync();
      const served = report.requests / report.seconds;
      const reaching = ROUTES.map((route, i) => `${route} ${((after[i] - before[i]) / report.seconds).toFixed(2)}/s`);
      return {
        p50: quantile(report.staleness, 0.5),
        p99: quantile(report.staleness, 0.99),
        max: report.staleness.at(-1),
        problems: report.errorSamples.map((error) => `${label}: a viewer's request failed: ${error}`),
        notes: [
          `${label}: nginx served ${Math.round(served)} requests/s to ${count} viewers (${report.requests} in ` +
          `${report.seconds.toFixed(1)} s: ${report.ok} 200, ${report.notModified} 304, ${report.errors} failed)`,
          `${label}: requests that reached the results-only instance: ${reaching.join(", ")}`,
          `${label}: p50/p99/max are the staleness of what the viewers saw: how long before each answer the first ` +
          `version it did not show was committed (the bench's own LISTEN), ${report.staleness.length} answers`,
        ],
      };
    },
  };
}
