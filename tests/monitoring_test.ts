import assert from "node:assert/strict";
import YAML from "yaml";
import { createMetrics } from "../lib/metrics/registry.ts";
import { resultsMetrics } from "../lib/results/metrics.ts";
import { HAVE_PROMTOOL, promtool } from "./support/promtool.ts";

const path = (file: string) => new URL(`../${file}`, import.meta.url).pathname;
const read = (file: string) => Deno.readTextFile(path(file));

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
}
const rulesOf = async (file: string): Promise<Rule[]> =>
  (YAML.parse(await read(file)) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

interface Panel {
  title: string;
  targets?: { expr: string }[];
}
const dashboardExprs = async (): Promise<{ title: string; expr: string }[]> => {
  const dashboard = JSON.parse(await read("monitoring/grafana/dashboards/vote-aggregator.json"));
  return (dashboard.panels as Panel[]).flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })));
};
// Grafana's variables, as Prometheus would see them once Grafana has substituted them.
const substituteGrafana = (expr: string) =>
  expr.replaceAll("$__rate_interval", "1m").replaceAll("$__interval", "15s").replaceAll("$queue", "votes.aggregation");

// The rabbitmq_prometheus series the rules and the dashboard use, from the plugin's documentation
// (its /metrics/detailed endpoint: families queue_coarse_metrics and queue_metrics, which the
// rabbitmq-queues job of monitoring/prometheus.yml requests). No broker here has the plugin to ask.
const RABBITMQ_SERIES = [
  "rabbitmq_detailed_queue_messages",
  "rabbitmq_detailed_queue_messages_ready",
  "rabbitmq_detailed_queue_messages_unacked",
  "rabbitmq_detailed_queue_consumers",
  "rabbitmq_detailed_queue_consumer_utilisation",
];

/** The series names an expression reads: what is left once labels, ranges, grouping and functions are gone. */
function seriesNames(expr: string): string[] {
  const keywords = new Set(["and", "or", "unless", "bool", "offset", "inf", "nan"]);
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, "")
    .replace(/\{[^}]*\}/g, "")
    .replace(/\[[^\]]*\]/g, "")
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "");
  return [...bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)]
    .filter((m) => !/^\s*\(/.test(bare.slice(m.index + m[0].length))) // a function's name
    .map((m) => m[0])
    .filter((name) => !keywords.has(name.toLowerCase()));
}

/** Every series the service exports (histograms as their _bucket, _sum and _count). */
async function serviceSeries(): Promise<Set<string>> {
  const names = new Set<string>();
  const { registry } = createMetrics();
  resultsMetrics([registry], () => undefined); // as lib/service.ts adds them
  for (const metric of await registry.getMetricsAsJSON()) {
    names.add(metric.name);
    if (String(metric.type) === "histogram") {
      for (const s of ["_bucket", "_sum", "_count"]) names.add(metric.name + s);
    }
  }
  return names;
}

Deno.test("monitoring: the alerts and the dashboard read only series that exist", async () => {
  const rules = [...await rulesOf("monitoring/alerts.yml"), ...await rulesOf("monitoring/vote_open.yml")];
  const known = new Set([
    ...await serviceSeries(),
    ...RABBITMQ_SERIES,
    ...rules.flatMap((r) => r.record ?? []),
    "up", // Prometheus's own, per scrape target
  ]);
  const exprs = [
    ...rules.map((r) => ({ title: r.alert ?? r.record!, expr: r.expr })),
    ...(await dashboardExprs()).map((e) => ({ ...e, expr: substituteGrafana(e.expr) })),
  ];
  for (const { title, expr } of exprs) {
    for (const name of seriesNames(expr)) assert.ok(known.has(name), `${title}: ${name} is exported by nobody`);
  }
  // The check itself: it does see the series in an expression.
  assert.deepEqual(seriesNames('sum by (le) (rate(a_total{x="y"}[5m])) > on () group_left () b'), ["a_total", "b"]);
});

Deno.test("monitoring: the alerts docs/operations.md explains are the alerts", async () => {
  const page = await read("docs/operations.md");
  assert.ok(page.includes("## Alerts"));
  const section = page.slice(page.indexOf("## Alerts"));
  const alerts = (await rulesOf("monitoring/alerts.yml")).flatMap((r) => r.alert ?? []);
  assert.ok(alerts.length >= 7, "service down, not ready, queue growing, dead letters, latency, retries, no votes");
  for (const alert of alerts) assert.ok(section.includes(`\`${alert}\``), `docs/operations.md "Alerts" lacks ${alert}`);
});

Deno.test("monitoring: prometheus.yml loads the rules and scrapes RabbitMQ's plugin; compose mounts and enables them", async () => {
  const config = YAML.parse(await read("monitoring/prometheus.yml"));
  assert.deepEqual(config.rule_files, ["alerts.yml", "vote_open.yml"]);
  const jobs = new Map<
    string,
    { metrics_path: string; params?: Record<string, string[]>; static_configs: { targets: string[] }[] }
  >(
    config.scrape_configs.map((j: { job_name: string }) => [j.job_name, j]),
  );
  assert.deepEqual(jobs.get("rabbitmq")?.static_configs[0].targets, ["rabbitmq:15692"]);
  const queues = jobs.get("rabbitmq-queues");
  assert.equal(queues?.metrics_path, "/metrics/detailed");
  assert.deepEqual(queues?.params?.family, ["queue_coarse_metrics", "queue_metrics"]);

  const compose = YAML.parse(await read("compose.yaml"));
  const mounts: string[] = compose.services.prometheus.volumes;
  for (const file of config.rule_files) {
    assert.ok(mounts.includes(`./monitoring/${file}:/etc/prometheus/${file}:ro`), file);
  }
  const rabbit = compose.services.rabbitmq;
  assert.ok(rabbit.volumes.includes("./monitoring/rabbitmq/enabled_plugins:/etc/rabbitmq/enabled_plugins:ro"));
  assert.match(await read("monitoring/rabbitmq/enabled_plugins"), /^\[.*\brabbitmq_prometheus\b.*\]\.\s*$/);
  assert.ok(rabbit.ports.some((p: string) => p.endsWith(":15692")));
});

Deno.test({
  name: "monitoring: promtool accepts the config and the rules, and the alerts' unit tests pass",
  ignore: !HAVE_PROMTOOL,
  fn: async () => {
    const config = await promtool(["check", "config", path("monitoring/prometheus.yml")]);
    assert.equal(config.code, 0, config.output);
    const rules = await promtool(["check", "rules", path("monitoring/alerts_test_vote_open.yml")]);
    assert.equal(rules.code, 0, rules.output);
    const tests = await promtool(["test", "rules", path("monitoring/alerts_test.yml")]);
    assert.equal(tests.code, 0, tests.output);
    assert.match(tests.stdout, /SUCCESS/, tests.output);
    // At least three alerts under test, each with a firing case.
    const unit = YAML.parse(await read("monitoring/alerts_test.yml"));
    const firing = new Set<string>();
    for (const test of unit.tests) {
      for (const t of test.alert_rule_test) if (t.exp_alerts.length) firing.add(t.alertname);
    }
    assert.ok(firing.size >= 3, `alerts with a firing case: ${[...firing]}`);
  },
});

Deno.test({
  name: "monitoring: every dashboard query parses (through promtool check rules)",
  ignore: !HAVE_PROMTOOL,
  fn: async () => {
    const exprs = await dashboardExprs();
    assert.ok(exprs.some((e) => e.expr.includes("rabbitmq_detailed_queue_messages_ready")), "queue depth panel");
    assert.ok(exprs.some((e) => e.expr.includes("consumer_utilisation")), "consumer utilisation panel");
    const rules = exprs.map((e, i) => ({ record: `dashboard:panel_${i}`, expr: substituteGrafana(e.expr) }));
    const file = await Deno.makeTempFile({ dir: "/tmp", prefix: "dashboard-rules-", suffix: ".yml" });
    try {
      await Deno.writeTextFile(file, JSON.stringify({ groups: [{ name: "dashboard", rules }] }));
      const { code, stdout, output } = await promtool(["check", "rules", file]);
      assert.equal(code, 0, output);
      assert.match(stdout, new RegExp(`SUCCESS: ${rules.length} rules found`), output);
    } finally {
      await Deno.remove(file);
    }
  },
});
