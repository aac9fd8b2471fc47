/**
 * The service under test: its configuration for one test (in-process, see
 * `testConfig`), its environment as a process (`serviceEnv`), the process
 * itself (`spawnService`: runs `main.ts` and waits until its HTTP server
 * answers), and its control plane seen from outside (`call`, `admin`, `metric`).
 *
 * @module
 */

import { type Config, loadConfig } from "../../lib/config/config.ts";
import { VARIABLE_NAMES } from "../../lib/config/variables.ts";
import type { Status } from "../../lib/pipeline/aggregator.ts";
import { V8_FLAGS } from "../../tools/permissions.ts";
import { withTimeout } from "../../lib/timeout.ts";
import { commandLine, descendants } from "./process.ts";
import { RABBITMQ_URL } from "./servers.ts";
import { Deadline, waitUntil } from "./wait.ts";

/** Bearer token of the services the tests start (`ADMIN_TOKEN`). */
export const ADMIN_TOKEN = "fault-suite-admin-token-0123456789";

/** A running service process. */
export interface ServiceProcess extends AsyncDisposable {
  child: Deno.ChildProcess;
  pid: number;
  /** The control plane's base URL. */
  url: string;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** GET /status. */
  status(): Promise<Status>;
  /** Resolves with the exit code once the process ends. */
  exited: Promise<number>;
  /** The exit code once it has exited. */
  readonly exitCode: number | undefined;
  /** `performance.now()` when it was spawned. */
  startedAt: number;
  /** Sends `signal` and waits for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** Sends `signal` to the child's whole process group (with {@link SpawnOptions.ownProcessGroup}) and waits for the exit code. */
  stopGroup(signal: Deno.Signal): Promise<number>;
  /** SIGTERM, then the exit code; SIGKILL (of it and every descendant) and an error after `graceMs`. */
  stopWithin(graceMs: number): Promise<number>;
}

/** Options of {@link spawnService}. */
export interface SpawnOptions {
  /**
   * Permission flags for `deno run`. @default broad permissions, with the V8 flags of `deno task start`
   * (so memory behaves as in production)
   */
  permissions?: string[];
  /**
   * Wait until start-up is past the database (connected, migrated: `/readyz`'s state is no longer `starting`),
   * the broker perhaps not yet. @default true
   */
  waitHealthy?: boolean;
  /** Longest wait for /healthz. @default 30000 */
  timeoutMs?: number;
  /**
   * Start it as operators do, with `deno task start` (the generated permission set), in this process's
   * environment less the service's variables; `pid` is then the process running main.ts. @default false
   */
  viaStartTask?: boolean;
  /** The task `viaStartTask` runs (`results`: a results-only instance). @default "start" */
  task?: string;
  /** Arguments after `main.ts` (`["results"]`: a results-only instance). @default [] */
  args?: string[];
  /**
   * Start it in a process group of its own (`setsid`), whose id is `child.pid`, as a supervisor that stops the
   * whole group does. @default false
   */
  ownProcessGroup?: boolean;
}

/** What the child keeps of this environment: where to find Deno and its module cache, nothing that configures the service. */
function inherited(): Record<string, string> {
  const kept: Record<string, string> = {};
  for (const name of ["PATH", "HOME", "DENO_DIR", "NO_COLOR"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) kept[name] = value;
  }
  return kept;
}

/**
 * Collects a child's stdout and stderr as they come.
 *
 * @returns what it printed so far, and its exit code once it ended and its output is read
 */
export function collectOutput(child: Deno.ChildProcess): { output: () => string; exited: Promise<number> } {
  let text = "";
  const decoder = new TextDecoder();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  };
  const drained = Promise.all([collect(child.stdout), collect(child.stderr)]);
  const exited = child.status.then(async (status) => {
    await drained;
    return status.code;
  });
  return { output: () => text, exited };
}

/** A TCP port free right now on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** Starts `main.ts` as a child process with `env` (on top of PATH and HOME) and an ephemeral HTTP port. */
export async function spawnService(env: Record<string, string>, options: SpawnOptions = {}): Promise<ServiceProcess> {
  const port = env.PROMETHEUS_PORT ?? String(freePort());
  const permissions = options.permissions ??
    ["--allow-net", "--allow-env", "--allow-read=.env", `--v8-flags=${V8_FLAGS.join(",")}`];
  let base = inherited();
  if (options.viaStartTask) {
    // The service's variables come from `env` alone (and .env for what it leaves unset).
    base = Deno.env.toObject();
    for (const name of VARIABLE_NAMES) delete base[name];
  }
  const startedAt = performance.now();
  const args = options.viaStartTask
    ? ["task", "--quiet", options.task ?? "start"]
    : ["run", "--quiet", ...permissions, MAIN, ...options.args ?? []];
  // setsid execs its command in place (a spawned child leads no group yet): the child's pid is the group's id.
  const child = new Deno.Command(options.ownProcessGroup ? "setsid" : Deno.execPath(), {
    args: options.ownProcessGroup ? [Deno.execPath(), ...args] : args,
    env: { ...base, HTTP_HOST: "127.0.0.1", LOG_LEVEL: "INFO", ...env, PROMETHEUS_PORT: port },
    clearEnv: true,
    cwd: new URL("../..", import.meta.url).pathname,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { output, exited } = collectOutput(child);
  const url = `http://127.0.0.1:${port}`;
  let done = false;
  let exitCode: number | undefined;
  exited.then((code) => exitCode = code).finally(() => done = true);
  const killAll = () => {
    for (const pid of [...descendants(child.pid).reverse(), child.pid]) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  };

  const service: ServiceProcess = {
    child,
    pid: child.pid,
    url,
    output,
    exited,
    startedAt,
    get exitCode() {
      return exitCode;
    },
    async status() {
      const response = await fetch(`${url}/status`);
      return await response.json();
    },
    async stop(signal: Deno.Signal = "SIGTERM") {
      if (!done) {
        try {
          child.kill(signal);
        } catch { /* already gone */ }
      }
      return await exited;
    },
    async stopGroup(signal) {
      if (!options.ownProcessGroup) throw new Error("stopGroup needs a service spawned with ownProcessGroup");
      if (!done) {
        try {
          Deno.kill(-child.pid, signal);
        } catch { /* already gone */ }
      }
      return await exited;
    },
    async stopWithin(graceMs) {
      if (!done) {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
      }
      const code = await withTimeout(exited, graceMs, "").catch(() => undefined);
      if (code === undefined) {
        killAll();
        throw new Error(
          `The service did not stop within ${graceMs} ms of SIGTERM; killed it:\n${output().slice(-4000)}`,
        );
      }
      return code;
    },
    async [Symbol.asyncDispose]() {
      if (!done) {
        killAll();
        await exited;
      }
    },
  };
  if (options.viaStartTask) {
    // deno task → launcher → deno run main.ts: the service is the process whose command runs main.ts.
    await waitUntil(
      () => {
        if (done) throw new Error(`The service did not start (exit code ${exitCode}):\n${output()}`);
        const found = descendants(child.pid).find((p) => /\bmain\.ts\b/.test(commandLine(p)));
        if (found) service.pid = found;
        return found !== undefined;
      },
      "deno task start runs main.ts",
      30_000,
    ).catch(async (error) => {
      killAll();
      await exited;
      throw error;
    });
  }

  if (options.waitHealthy !== false) {
    const timeoutMs = options.timeoutMs ?? 30_000;
    // The control plane answers from the start; start-up is past the database once the state is not `starting`.
    const started = async () => {
      const response = await fetch(`${url}/readyz`); // refused until it listens: retried
      return (await response.json()).state !== "starting";
    };
    await new Deadline("spawnService", timeoutMs).until(
      async () => done || await started(),
      "start-up is past the database",
    )
      .catch(async () => {
        await service.stop("SIGKILL");
        throw new Error(`the service was not past the database within ${timeoutMs} ms:\n${output()}`);
      });
    if (done) throw new Error(`the service exited with ${await exited} before serving HTTP:\n${output()}`);
  }
  return service;
}

/** The service's configuration for a test: its own queue and database, an ephemeral HTTP port. */
export function testConfig(
  db: { url: string },
  queue: { name: string },
  overrides: Record<string, string> = {},
): Config {
  return loadConfig({
    DATABASE_URL: db.url,
    RABBITMQ_URL,
    RABBITMQ_QUEUE: queue.name,
    PROMETHEUS_PORT: "0",
    HTTP_HOST: "127.0.0.1",
    POSTGRES_SSLMODE: "disable",
    BATCH_TIMEOUT_SECONDS: "0.05",
    RETRY_DELAY_SECONDS: "0.05",
    ...overrides,
  });
}

/** The environment of a service process for one test (on top of spawnService's defaults). */
export function serviceEnv(
  db: { url: string },
  queue: { name: string },
  overrides: Record<string, string> = {},
): Record<string, string> {
  return {
    DATABASE_URL: db.url,
    RABBITMQ_URL,
    RABBITMQ_QUEUE: queue.name,
    RABBITMQ_QUEUE_TYPE: "classic",
    POSTGRES_SSLMODE: "disable",
    POSTGRES_MIN_CONNECTIONS: "2",
    POSTGRES_MAX_CONNECTIONS: "10",
    MAX_INFLIGHT_BATCHES: "2",
    MAX_RETRY_ATTEMPTS: "3",
    BATCH_SIZE: "50",
    BATCH_TIMEOUT_SECONDS: "0.05",
    RABBITMQ_PREFETCH_COUNT: "150",
    RETRY_DELAY_SECONDS: "0.1",
    SHUTDOWN_TIMEOUT_SECONDS: "15",
    ADMIN_TOKEN,
    LOG_LEVEL: "INFO",
    LOG_FORMAT: "text",
    ...overrides,
  };
}

/** GET or POST `path` on a service; the body parsed as JSON when it is. */
export async function call(
  service: ServiceProcess,
  path: string,
  init: RequestInit = {},
  // deno-lint-ignore no-explicit-any
): Promise<{ status: number; body: any }> {
  const response = await fetch(`${service.url}${path}`, init);
  const text = await response.text();
  const json = (response.headers.get("content-type") ?? "").includes("json");
  return { status: response.status, body: json ? JSON.parse(text) : text };
}

/** POST an admin route (`/pause`, `/resume`, `/flush`) with the suite's token. */
export function admin(service: ServiceProcess, path: string): ReturnType<typeof call> {
  return call(service, path, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
}

/** Sum of the samples of metric `name` (whose labels include `labels`) on the service's /metrics. */
export async function metric(
  service: ServiceProcess,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const { body } = await call(service, "/metrics");
  let sum = 0;
  for (const line of String(body).split("\n")) {
    const match = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/);
    if (!match || match[1] !== name) continue;
    const wanted = Object.entries(labels).every(([k, v]) => (match[2] ?? "").includes(`${k}="${v}"`));
    if (wanted) sum += Number(match[3]);
  }
  return sum;
}

/** The service's resident memory in MiB, as it reports it (`process_resident_memory_bytes`, from Deno.memoryUsage). */
export async function rssMbOf(service: ServiceProcess): Promise<number> {
  return (await metric(service, "process_resident_memory_bytes")) / 1024 / 1024;
}
