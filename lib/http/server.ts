/**
 * HTTP: the control plane. It only observes and steers; votes never pass here.
 *
 * | route | method | answer |
 * | --- | --- | --- |
 * | `/metrics` | GET | Prometheus text format |
 * | `/healthz` | GET | 200 while the process runs its loops |
 * | `/readyz` | GET | 200 while running or paused by an operator; 503 while starting, degraded (database failing past the retry budget or not answering its probe, broker down) or draining, with a `reason` naming the part (pipeline/readiness.ts) |
 * | `/status` | GET | version, state, open batch, last commit, totals since start |
 * | `/flush` | POST, admin | commits the open batch, then answers `{flushed: n}` (503 while starting) |
 * | `/pause` | POST, admin | stops consuming and closes the open batch; answers within 1 s the state, `flushed` and whether all was `committed` (what was not stays unacknowledged until it is; 409 while draining, 503 while starting) |
 * | `/resume` | POST, admin | consumes again (409 while draining, 503 while starting) |
 *
 * The results routes (`/`, `/results`, `/results/{law_id}`, `/results/stream`) are
 * lib/results/routes.ts's, with their own token (`RESULTS_TOKEN`) and CORS. A
 * results-only instance (lib/results/only.ts) serves them with `/metrics`,
 * `/healthz` and `/readyz` alone: it has no pipeline, so no `/status`, `/flush`,
 * `/pause` or `/resume` (404).
 *
 * A malformed request (a Host or target that is not a URL, or no Host header at
 * all) answers 400 on every route, with no internals. RFC 9112 §3.2 asks 400 of an
 * HTTP/1.1 request without Host; `Deno.serve` does not tell a handler the request's
 * HTTP version, so an HTTP/1.0 request without Host answers 400 too (an empty
 * `Host:` is allowed, as the RFC allows it). Admin routes need `Authorization: Bearer <ADMIN_TOKEN>` (compared in constant
 * time); without `ADMIN_TOKEN` they answer 403.
 *
 * @example
 * ```ts
 * import { serveControlPlane } from "./server.ts";
 * const server = serveControlPlane({ hostname: "127.0.0.1", port: 8001, adminToken: undefined,
 *   pipeline: () => aggregator, metrics });
 * await server.shutdown();
 * ```
 *
 * @module
 */

import type { Readiness, Status } from "../pipeline/aggregator.ts";
import { IllegalTransitionError, type StateName } from "../pipeline/state.ts";
import { StartingError } from "../startup.ts";
import { getLogger } from "../log.ts";
import type { Metrics } from "../metrics/registry.ts";
import type { ResultsHandler } from "../results/routes.ts";
import { bearerToken, tokenChecker } from "./token.ts";
import { VERSION } from "../version.ts";

const log = getLogger("http");

/** Largest request body accepted (admin routes take none). */
export const MAX_REQUEST_BODY_BYTES = 1024;

/** What the routes observe and steer: the pipeline (`Aggregator`), or start-up's stand-in until it runs. */
export interface ControlledPipeline {
  readonly state: StateName | "starting";
  readiness(): Readiness;
  status(): Status;
  flush(): Promise<number>;
  pause(): Promise<{ flushed: number; committed: boolean }>;
  resume(): Promise<void>;
  refreshGauges(): void;
}

/** Options of {@link serveControlPlane}. */
export interface ControlPlaneOptions {
  hostname: string;
  /** 0 picks a free port (see the returned server's `addr`). */
  port: number;
  adminToken: string | undefined;
  /**
   * The pipeline as of each request: start-up's stand-in (`../startup.ts`) until the pipeline runs. Undefined on a
   * results-only instance, which then gives `readiness`.
   */
  pipeline?: () => ControlledPipeline;
  /** What `/readyz` answers (200 when `ready`) when there is no `pipeline`. */
  readiness?: () => { ready: boolean };
  metrics: Pick<Metrics, "registry">;
  /** The results routes (lib/results/routes.ts), asked first: `/`, `/results`, `/results/…`. */
  results?: ResultsHandler;
  /** Told the bound address once listening. */
  onListen?: (addr: Deno.NetAddr) => void;
}

type Handler = (request: Request) => Promise<Response> | Response;
interface Route {
  method: "GET" | "POST";
  admin: boolean;
  handle: Handler;
}

/**
 * Starts the control plane's HTTP server.
 *
 * @throws when it cannot listen (the port taken, the address not this host's); the message names `PROMETHEUS_PORT`
 */
export function serveControlPlane(options: ControlPlaneOptions): Deno.HttpServer<Deno.NetAddr> {
  const { pipeline, metrics } = options;
  const readiness = options.readiness ?? (() => pipeline!().readiness());
  const routes: Record<string, Route> = {
    "/metrics": {
      method: "GET",
      admin: false,
      handle: async () => {
        pipeline?.().refreshGauges();
        return new Response(await metrics.registry.metrics(), {
          headers: { "content-type": metrics.registry.contentType },
        });
      },
    },
    "/healthz": { method: "GET", admin: false, handle: () => json(200, { status: "ok" }) },
    "/readyz": {
      method: "GET",
      admin: false,
      handle: () => {
        const now = readiness();
        return json(now.ready ? 200 : 503, now);
      },
    },
    ...(pipeline ? pipelineRoutes(pipeline) : {}),
  };
  const adminCheck = options.adminToken === undefined ? undefined : tokenChecker(options.adminToken);

  try {
    return Deno.serve({
      hostname: options.hostname,
      port: options.port,
      onListen: (addr) => options.onListen?.(addr),
      onError: (error) => {
        log.error("HTTP handler failed: {error}", { error });
        return json(500, { error: "internal error" });
      },
    }, handler);
  } catch (error) {
    throw new Error(
      `Cannot serve HTTP on ${options.hostname}:${options.port} (PROMETHEUS_PORT): ${(error as Error).message}`,
      { cause: error },
    );
  }

  async function handler(request: Request): Promise<Response> {
    // Without Host, Deno makes the URL from the listening address: the request itself is malformed.
    if (!request.headers.has("host")) return json(400, { error: "malformed request: no Host header" });
    const url = urlOf(request);
    // A Host or target that does not make a URL (`Host: a b`) is the client's error, on every route.
    if (url === undefined) return json(400, { error: "malformed request: its Host or target is not a valid URL" });
    const path = url.pathname;
    const results = options.results?.(request, url);
    if (results) return await results;
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (!route) return json(404, { error: `no route ${path}` });
    const allowed = route.method === "GET" ? "GET, HEAD" : "POST";
    if (request.method !== route.method && !(route.method === "GET" && request.method === "HEAD")) {
      return json(405, { error: `${path} takes ${allowed}` }, { allow: allowed });
    }
    if (route.admin) {
      if (adminCheck === undefined) {
        return json(403, { error: "admin routes are disabled: set ADMIN_TOKEN to enable them" });
      }
      if (!await adminCheck(bearerToken(request))) {
        return json(401, { error: "missing or wrong bearer token" }, { "www-authenticate": 'Bearer realm="admin"' });
      }
    }
    if (await bodyTooLarge(request)) {
      return json(413, { error: `request body over ${MAX_REQUEST_BODY_BYTES} bytes` });
    }
    try {
      return await route.handle(request);
    } catch (error) {
      // An operator's pause or resume during a drain: the state machine refuses it.
      if (error instanceof IllegalTransitionError) return json(409, { error: error.message });
      if (error instanceof StartingError) return json(503, { error: error.message }, { "retry-after": "1" });
      throw error;
    }
  }
}

/** The routes that observe and steer the pipeline: a counting instance's only. */
function pipelineRoutes(pipeline: () => ControlledPipeline): Record<string, Route> {
  return {
    "/status": { method: "GET", admin: false, handle: () => json(200, { version: VERSION, ...pipeline().status() }) },
    "/flush": {
      method: "POST",
      admin: true,
      handle: async () => json(200, { flushed: await pipeline().flush() }),
    },
    "/pause": {
      method: "POST",
      admin: true,
      handle: async () => {
        const { flushed, committed } = await pipeline().pause();
        log.info("Paused by an operator; {flushed} messages flushed, {outcome}", {
          flushed,
          outcome: committed ? "all committed" : "still committing (unacknowledged until committed)",
        });
        return json(200, { state: pipeline().state, flushed, committed });
      },
    },
    "/resume": {
      method: "POST",
      admin: true,
      handle: async () => {
        await pipeline().resume();
        log.info("Resumed by an operator");
        return json(200, { state: pipeline().state });
      },
    },
  };
}

/** The request's path, or undefined when its Host or target do not make a URL. */
function urlOf(request: Request): URL | undefined {
  try {
    return new URL(request.url);
  } catch {
    return undefined;
  }
}

async function bodyTooLarge(request: Request): Promise<boolean> {
  const declared = Number(request.headers.get("content-length") ?? 0);
  if (declared > MAX_REQUEST_BODY_BYTES) return true;
  if (!request.body) return false;
  let size = 0;
  for await (const chunk of request.body) {
    size += chunk.byteLength;
    if (size > MAX_REQUEST_BODY_BYTES) return true;
  }
  return false;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}
