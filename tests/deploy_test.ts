import assert from "node:assert/strict";
import YAML from "yaml";
import { describeVariable, VARIABLE_NAMES } from "../lib/config/variables.ts";
import { startService } from "../lib/service.ts";
import { AbortedError } from "../lib/retry.ts";
import { TcpProxy, viaPort } from "./support/proxy.ts";
import { createTestDatabase, createTestQueue } from "./support/servers.ts";
import { freePort, testConfig } from "./support/service.ts";
import { waitUntil } from "./support/wait.ts";

const path = (file: string) => new URL(`../${file}`, import.meta.url).pathname;
const read = (file: string) => Deno.readTextFile(path(file));

// deno-lint-ignore no-explicit-any
type Manifest = { kind: string; metadata: { name: string; labels?: Record<string, string> }; [key: string]: any };
async function manifests(): Promise<Map<string, Manifest>> {
  const byKind = new Map<string, Manifest>();
  for await (const entry of Deno.readDir(path("deploy/k8s"))) {
    if (!entry.name.endsWith(".yaml") || entry.name === "kustomization.yaml") continue;
    for (const doc of YAML.parseAllDocuments(await read(`deploy/k8s/${entry.name}`))) {
      const manifest = doc.toJS() as Manifest;
      assert.ok(!byKind.has(manifest.kind), `one ${manifest.kind}`);
      byKind.set(manifest.kind, manifest);
    }
  }
  return byKind;
}

/** A systemd unit's settings, each key with its values in order (a key may repeat). */
async function unitSettings(file: string): Promise<Map<string, string[]>> {
  const settings = new Map<string, string[]>();
  for (const line of (await read(file)).split("\n")) {
    const match = line.match(/^([A-Za-z]+)=(.*)$/);
    if (match) settings.set(match[1], [...settings.get(match[1]) ?? [], match[2]]);
  }
  return settings;
}

/** KEY=value lines of an EnvironmentFile, comments included (a commented-out `# KEY=` names a variable too). */
async function envFileNames(file: string): Promise<string[]> {
  return [...(await read(file)).matchAll(/^#? ?([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]);
}

const SHUTDOWN_DEFAULT = Number(describeVariable("SHUTDOWN_TIMEOUT_SECONDS").default);
const PORT_DEFAULT = Number(describeVariable("PROMETHEUS_PORT").default);
const mebibytes = (quantity: string) => {
  const [, value, unit] = quantity.match(/^(\d+)(Mi|Gi)$/) ?? assert.fail(`unexpected quantity ${quantity}`);
  return Number(value) * (unit === "Gi" ? 1024 : 1);
};

Deno.test("deploy: every variable in the ConfigMap, the Secret and the systemd EnvironmentFile is the service's", async () => {
  const k8s = await manifests();
  const named = {
    ConfigMap: Object.keys(k8s.get("ConfigMap")!.data),
    Secret: Object.keys(k8s.get("Secret")!.stringData),
    "vote-aggregator.env": await envFileNames("deploy/systemd/vote-aggregator.env"),
  };
  for (const [where, names] of Object.entries(named)) {
    assert.ok(names.length >= 3, where);
    for (const name of names) {
      assert.ok((VARIABLE_NAMES as string[]).includes(name), `${where}: ${name} is not a variable`);
    }
  }
  // Secrets stay out of the ConfigMap.
  for (const secret of ["RABBITMQ_PASSWORD", "POSTGRES_PASSWORD", "ADMIN_TOKEN", "DATABASE_URL", "RABBITMQ_URL"]) {
    assert.ok(!named.ConfigMap.includes(secret), `${secret} belongs in the Secret`);
  }
});

Deno.test("deploy: the Deployment's probes, port, drain bound, sandbox and requests", async () => {
  const k8s = await manifests();
  const config = k8s.get("ConfigMap")!.data as Record<string, string>;
  const pod = k8s.get("Deployment")!.spec.template.spec;
  const [container] = pod.containers;
  const port = Number(config.PROMETHEUS_PORT ?? PORT_DEFAULT);
  assert.equal(port, PORT_DEFAULT, "the configuration table's PROMETHEUS_PORT");
  const http = container.ports.find((p: { name: string }) => p.name === "http");
  assert.equal(http.containerPort, port);
  assert.deepEqual(
    ["startupProbe", "livenessProbe", "readinessProbe"].map((
      p,
    ) => [container[p].httpGet.path, container[p].httpGet.port]),
    [["/healthz", "http"], ["/healthz", "http"], ["/readyz", "http"]],
  );
  // The HTTP server answers before the database and the broker: the startup probe allows a minute for that alone,
  // and the pod then waits for the servers unready rather than exiting (STARTUP_TIMEOUT_SECONDS 0: for ever).
  assert.ok(container.startupProbe.periodSeconds * container.startupProbe.failureThreshold <= 60);
  assert.equal(config.STARTUP_TIMEOUT_SECONDS, "0");
  // /readyz follows an outage within 5 s: the probe at most as far apart, and two failures take the pod out.
  assert.ok(container.readinessProbe.periodSeconds <= 5);
  assert.ok(container.readinessProbe.periodSeconds * container.readinessProbe.failureThreshold <= 10);
  assert.deepEqual(container.envFrom.map((e: Record<string, { name: string }>) => Object.keys(e)[0]), [
    "configMapRef",
    "secretRef",
  ]);

  const shutdown = Number(config.SHUTDOWN_TIMEOUT_SECONDS ?? SHUTDOWN_DEFAULT);
  const preStop = container.lifecycle.preStop.exec.command;
  assert.equal(preStop[0], "sleep");
  assert.ok(
    pod.terminationGracePeriodSeconds > Number(preStop[1]) + Math.max(shutdown, SHUTDOWN_DEFAULT),
    "the grace period covers the preStop pause and the whole drain",
  );

  assert.equal(container.securityContext.readOnlyRootFilesystem, true);
  assert.equal(container.securityContext.allowPrivilegeEscalation, false);
  assert.equal(pod.securityContext.runAsNonRoot, true);
  assert.ok(pod.securityContext.runAsUser > 0);
  // docs/performance.md: ~150 MB peak RSS.
  assert.ok(mebibytes(container.resources.requests.memory) >= 150);
  assert.ok(mebibytes(container.resources.limits.memory) > mebibytes(container.resources.requests.memory));

  const labels = k8s.get("Deployment")!.spec.selector.matchLabels;
  assert.deepEqual(k8s.get("Service")!.spec.selector, labels);
  assert.equal(k8s.get("Service")!.spec.ports[0].targetPort, "http");
  assert.deepEqual(k8s.get("PodDisruptionBudget")!.spec, { maxUnavailable: 1, selector: { matchLabels: labels } });
});

Deno.test("deploy: the probe paths answer 200 on a running service", async () => {
  const container = (await manifests()).get("Deployment")!.spec.template.spec.containers[0];
  const paths = ["startupProbe", "livenessProbe", "readinessProbe"].map((p) => container[p].httpGet.path as string);
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const service = await startService(testConfig(db, queue, {}));
  try {
    for (const probe of paths) {
      const response = await fetch(`http://127.0.0.1:${service.http.port}${probe}`);
      await response.body?.cancel();
      assert.equal(response.status, 200, probe);
    }
  } finally {
    await service.stop();
  }
});

Deno.test("deploy: while the database is not up yet, the startup and liveness probes pass and readiness does not", async () => {
  const container = (await manifests()).get("Deployment")!.spec.template.spec.containers[0];
  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  await using database = new TcpProxy(Number(new URL(db.url).port || 5432));
  await database.cut();
  const port = freePort();
  const stop = new AbortController();
  const starting = startService(
    testConfig({ url: viaPort(db.url, database.port) }, queue, { PROMETHEUS_PORT: String(port) }),
    { signal: stop.signal },
  );
  starting.catch(() => {});
  try {
    const statusOf = async (probe: string) => {
      const response = await fetch(`http://127.0.0.1:${port}${container[probe].httpGet.path}`);
      await response.body?.cancel();
      return response.status;
    };
    await waitUntil(() => statusOf("startupProbe").then((s) => s === 200, () => false), "the startup probe passes");
    assert.equal(await statusOf("livenessProbe"), 200);
    assert.equal(await statusOf("readinessProbe"), 503);
  } finally {
    stop.abort();
    await assert.rejects(starting, AbortedError);
  }
});

Deno.test("deploy: the systemd unit has the sandbox, and stops later than the drain", async () => {
  const unit = await unitSettings("deploy/systemd/vote-aggregator.service");
  const one = (key: string) => unit.get(key)?.at(-1);
  assert.equal(one("Type"), "exec");
  assert.equal(one("DynamicUser"), "yes");
  assert.equal(one("ProtectSystem"), "strict");
  assert.equal(one("NoNewPrivileges"), "yes");
  assert.equal(one("Restart"), "on-failure");
  assert.equal(one("EnvironmentFile"), "/etc/vote-aggregator/env");
  assert.ok(unit.get("SystemCallFilter")?.includes("@system-service"));
  assert.match(one("RestrictAddressFamilies") ?? "", /AF_INET AF_INET6/);
  assert.ok(!unit.has("MemoryDenyWriteExecute"), "V8 needs writable executable memory");
  const env = Object.fromEntries(
    (await read("deploy/systemd/vote-aggregator.env")).split("\n").filter((l) => /^[A-Z]/.test(l)).map((l) =>
      l.split("=", 2)
    ),
  );
  const shutdown = Math.max(Number(env.SHUTDOWN_TIMEOUT_SECONDS ?? SHUTDOWN_DEFAULT), SHUTDOWN_DEFAULT);
  assert.ok(Number(one("TimeoutStopSec")) > shutdown, "TimeoutStopSec above SHUTDOWN_TIMEOUT_SECONDS");
  assert.equal(one("KillSignal"), "SIGTERM");
  assert.equal(one("KillMode"), "mixed", "SIGTERM to the service, SIGKILL to what is left at TimeoutStopSec");
  assert.equal(env.STARTUP_TIMEOUT_SECONDS, "0", "servers that are down are waited for, not a restart loop");
  assert.ok(!(unit.get("After") ?? []).some((a) => /postgres|rabbitmq/i.test(a)), "no ordering on the servers");
});

const SYSTEMD_ANALYZE = await new Deno.Command("systemd-analyze", { args: ["--version"], stdout: "null" }).output()
  .then((o) => o.success, () => false);
if (!SYSTEMD_ANALYZE) console.log("systemd-analyze not found: skipping systemd-analyze verify");

Deno.test({
  name: "deploy: systemd-analyze verify accepts the unit",
  ignore: !SYSTEMD_ANALYZE,
  fn: async () => {
    // verify also checks that ExecStart exists: point it at a stand-in, since the binary is not installed here.
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "unit-" });
    try {
      const binary = `${dir}/vote-aggregator`;
      await Deno.writeTextFile(binary, "#!/bin/sh\n", { mode: 0o755 });
      const unit = (await read("deploy/systemd/vote-aggregator.service"))
        .replace("ExecStart=/usr/local/bin/vote-aggregator", `ExecStart=${binary}`);
      assert.ok(unit.includes(`ExecStart=${binary}`));
      await Deno.writeTextFile(`${dir}/vote-aggregator.service`, unit);
      const verify = await new Deno.Command("systemd-analyze", {
        args: ["verify", `${dir}/vote-aggregator.service`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const output = new TextDecoder().decode(verify.stdout) + new TextDecoder().decode(verify.stderr);
      assert.equal(verify.code, 0, output);
      assert.equal(output.trim(), "", "no warnings");
      const security = await new Deno.Command("systemd-analyze", {
        args: ["security", "--offline=yes", `${dir}/vote-aggregator.service`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const score = new TextDecoder().decode(security.stdout).match(/Overall exposure level for .*: ([\d.]+)/);
      if (score) {
        console.log(`systemd-analyze security: exposure ${score[1]}`);
        assert.ok(Number(score[1]) <= 2, `exposure ${score[1]}`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const KUBECTL = await new Deno.Command("kubectl", { args: ["version", "--client"], stdout: "null", stderr: "null" })
  .output().then((o) => o.success, () => false);
if (!KUBECTL) console.log("kubectl not found: skipping kubectl kustomize");

Deno.test({
  name: "deploy: kubectl kustomize builds deploy/k8s (offline)",
  ignore: !KUBECTL,
  fn: async () => {
    const { code, stdout, stderr } = await new Deno.Command("kubectl", {
      args: ["kustomize", path("deploy/k8s")],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    const kinds = YAML.parseAllDocuments(new TextDecoder().decode(stdout)).map((d) => d.toJS().kind).sort();
    assert.deepEqual(kinds, ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]);
  },
});
