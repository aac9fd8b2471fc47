/**
 * The service as a separate process, for tests that kill, restart or
 * constrain it: `spawnService(env)` runs `main.ts` with the given environment
 * and waits until its HTTP server answers.
 *
 * @module
 */

import type { Status } from "../lib/aggregator.ts";
import { V8_FLAGS } from "../tools/permissions.ts";

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
  /** Sends `signal` and waits for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
}

/** Options of {@link spawnService}. */
export interface SpawnOptions {
  /**
   * Permission flags for `deno run`. @default broad permissions, with the V8 flags of `deno task start`
   * (so memory behaves as in production)
   */
  permissions?: string[];
  /** Wait until /healthz answers. @default true */
  waitHealthy?: boolean;
  /** Longest wait for /healthz. @default 30000 */
  timeoutMs?: number;
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

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Starts `main.ts` as a child process with `env` (on top of PATH and HOME) and an ephemeral HTTP port. */
export async function spawnService(env: Record<string, string>, options: SpawnOptions = {}): Promise<ServiceProcess> {
  const port = env.PROMETHEUS_PORT ?? String(freePort());
  const permissions = options.permissions ??
    ["--allow-net", "--allow-env", "--allow-read=.env", `--v8-flags=${V8_FLAGS.join(",")}`];
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...permissions, MAIN],
    env: {
      ...inherited(),
      HTTP_HOST: "127.0.0.1",
      LOG_LEVEL: "INFO",
      ...env,
      PROMETHEUS_PORT: port,
    },
    clearEnv: true,
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const { output, exited } = collectOutput(child);
  const url = `http://127.0.0.1:${port}`;
  let done = false;
  exited.finally(() => done = true);

  const service: ServiceProcess = {
    child,
    pid: child.pid,
    url,
    output,
    exited,
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
    async [Symbol.asyncDispose]() {
      if (!done) await service.stop("SIGKILL");
    },
  };

  if (options.waitHealthy !== false) {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    for (;;) {
      if (done) throw new Error(`the service exited with ${await exited} before serving HTTP:\n${output()}`);
      try {
        const response = await fetch(`${url}/healthz`);
        await response.body?.cancel();
        if (response.ok) break;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) {
        await service.stop("SIGKILL");
        throw new Error(`the service did not answer /healthz within ${options.timeoutMs ?? 30_000} ms:\n${output()}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return service;
}
