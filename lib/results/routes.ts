/**
 * The results routes on the control plane's HTTP server: read-only, and
 * nothing but totals (no vote hash, no audit row). It owns their HTTP: paths,
 * methods, `RESULTS_TOKEN`, CORS (`RESULTS_CORS_ORIGINS`, these routes only),
 * the client cap's 503 and the stream's framing and backpressure. What the
 * numbers are is {@link ./store.ts}'s (the JSON routes read the table through
 * the results connections) and {@link ./hub.ts}'s (the stream).
 *
 * | route | answer |
 * | --- | --- |
 * | `GET /` | the results page (one self-contained HTML file, `page.html`) |
 * | `GET /results` | `{at, laws: [{law_id, oui_count, non_count, total_votes, version, updated_at}]}` |
 * | `GET /results/{law_id}` | `{at, law_id, …}`; 404 for a law with no vote (the law `stream` is only in the others) |
 * | `GET /results/stream` | `text/event-stream`: `snapshot`, then `totals` per committed change; heartbeats |
 *
 * With `RESULTS_TOKEN` set each needs it: `Authorization: Bearer <token>`, a
 * `token` query parameter (the page's link; it sets the `results_token`
 * cookie, HttpOnly, that the page's stream then sends) or that cookie.
 *
 * The page, `/results` and `/results/{law_id}` are cacheable ({@link ./cache.ts}):
 * a strong `ETag` of the body, 304 to an `If-None-Match` that names it, and
 * `Cache-Control` from `RESULTS_CACHE_SECONDS` (`private, no-store` under a
 * token). Their bodies depend on the table alone: `at` is the latest
 * `updated_at` among the laws shown (`null` with none), not the time of the
 * request. The page follows the results by its stream or, in `poll` mode
 * (`RESULTS_PAGE_MODE`) and whenever its stream is refused, by conditional
 * requests to `/results` about once a second.
 *
 * @module
 */

import type { Sql } from "../database/pool.ts";
import { getLogger } from "../log.ts";
import { bearerToken, tokenChecker } from "../http/token.ts";
import { cacheControl, entityTag, notModified } from "./cache.ts";
import { HubFullError, type ResultsHub } from "./hub.ts";
import type { ResultsRoute } from "../metrics/labels.ts";
import page from "./page.html" with { type: "text" };
import { readLaw, readResults } from "./store.ts";

const log = getLogger("results");

/** Options of {@link resultsRoutes}. */
export interface ResultsRoutesOptions {
  hub: ResultsHub;
  /** The results connections (not the write pool). */
  sql: Sql;
  token: string | undefined;
  /** Origins allowed to read the results from a browser (`["*"]`: any); empty: same origin only. */
  corsOrigins: readonly string[];
  /** `Retry-After` of a refused stream, in seconds. @default 5 */
  retryAfterSeconds?: number;
  /** `RESULTS_CACHE_SECONDS`: how long shared caches may keep the results and the page. @default 1 */
  cacheSeconds?: number;
  /** `RESULTS_PAGE_MODE`: how the page follows the results. @default "stream" */
  pageMode?: "stream" | "poll";
  /** Counted into per route, for `results_requests_total` (read at each scrape). */
  requests?: Record<ResultsRoute, number>;
}

/** Answers a results request, or undefined when `path` is not a results route. */
export type ResultsHandler = (request: Request, url: URL) => Promise<Response> | undefined;

const COOKIE = "results_token";
const PAGE_CSP = cspFor(page);

/** The results routes; http.ts asks them first. */
export function resultsRoutes(options: ResultsRoutesOptions): ResultsHandler {
  const { hub, sql } = options;
  const check = options.token === undefined ? undefined : tokenChecker(options.token);
  const anyOrigin = options.corsOrigins.includes("*");
  const retryAfter = String(options.retryAfterSeconds ?? 5);
  const caching = cacheControl({ cacheSeconds: options.cacheSeconds ?? 1, token: options.token });
  // The mode is an attribute of <body>, outside the script and style whose hashes the CSP names.
  const pageBody = page.replace("<body>", `<body data-mode="${options.pageMode ?? "stream"}">`);
  const pageTag = entityTag(pageBody);

  /** A cacheable answer: `body` with its tag, or 304 when the request holds that tag already. */
  const cacheable = async (
    request: Request,
    body: string,
    contentType: string,
    headers: Record<string, string>,
    tag?: string,
  ): Promise<Response> => {
    const etag = tag ?? await entityTag(body);
    const validators = { etag, "cache-control": caching, ...headers };
    if (notModified(request, etag)) return new Response(null, { status: 304, headers: validators });
    return new Response(body, { headers: { "content-type": contentType, ...validators } });
  };

  const cors = (request: Request): Record<string, string> => {
    const origin = request.headers.get("origin");
    if (origin === null) return {};
    if (anyOrigin) return { "access-control-allow-origin": "*" };
    return options.corsOrigins.includes(origin) ? { "access-control-allow-origin": origin, vary: "origin" } : {};
  };

  const handle = async (request: Request, url: URL): Promise<Response> => {
    const path = url.pathname;
    const headers = cors(request);
    if (request.method === "OPTIONS" && path !== "/") {
      if (!headers["access-control-allow-origin"]) return json(403, { error: "origin not allowed" });
      return new Response(null, {
        status: 204,
        headers: {
          ...headers,
          "access-control-allow-methods": "GET, HEAD",
          "access-control-allow-headers": "authorization, last-event-id, cache-control",
          "access-control-max-age": "600",
        },
      });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return json(405, { error: `${path} takes GET, HEAD` }, { allow: "GET, HEAD", ...headers });
    }
    const queryToken = url.searchParams.get("token") ?? undefined;
    if (check !== undefined) {
      const presented = bearerToken(request) ?? queryToken ?? cookie(request, COOKIE);
      if (!await check(presented)) {
        const challenge = { "www-authenticate": 'Bearer realm="results"', ...headers };
        if (path === "/") {
          return new Response(EMBARGO_PAGE, {
            status: 401,
            headers: { "content-type": "text/html; charset=utf-8", ...challenge },
          });
        }
        return json(401, { error: "the results need RESULTS_TOKEN (bearer token or ?token=)" }, challenge);
      }
    }
    if (path === "/") {
      const cookieHeader: Record<string, string> = check !== undefined && queryToken !== undefined
        ? { "set-cookie": `${COOKIE}=${encodeURIComponent(queryToken)}; Path=/; HttpOnly; SameSite=Strict` }
        : {};
      return cacheable(request, pageBody, "text/html; charset=utf-8", {
        "content-security-policy": await PAGE_CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        ...cookieHeader,
      }, await pageTag);
    }
    if (path === "/results/stream") return stream(request, headers);
    if (path === "/results") {
      const laws = await readResults(sql);
      const at = laws.reduce<string | null>(
        (latest, law) => latest === null || law.updated_at > latest ? law.updated_at : latest,
        null,
      );
      return cacheable(request, JSON.stringify({ at, laws }), "application/json", headers);
    }
    let lawId: string;
    try {
      lawId = decodeURIComponent(path.slice("/results/".length));
    } catch {
      return json(400, { error: "the law id is not valid percent-encoding" }, headers);
    }
    const law = await readLaw(sql, lawId);
    // Cacheable too: a crowd asking for a law with no vote yet is served by the cache as well.
    if (law === undefined) {
      return json(404, { error: "no votes counted for this law" }, { ...headers, "cache-control": caching });
    }
    return cacheable(request, JSON.stringify({ at: law.updated_at, ...law }), "application/json", headers);
  };

  const stream = (request: Request, headers: Record<string, string>): Response => {
    const streamHeaders = {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      "x-accel-buffering": "no",
      ...headers,
    };
    if (request.method === "HEAD") return new Response(null, { headers: streamHeaders });
    let client;
    try {
      client = hub.connect(request.headers.get("last-event-id"));
    } catch (error) {
      if (!(error instanceof HubFullError)) throw error;
      return json(503, { error: error.message }, { "retry-after": retryAfter, ...headers });
    }
    // Pushed at each wake, not awaited per client: the hub calls `deliver`, which writes at once when the
    // response asked for more (`pull` was called since the last write), with no promise per client and
    // event. A client that does not read holds one event at most (it is asked for nothing more); its next
    // `pull` delivers what it missed since, as one event.
    let controller: ReadableStreamDefaultController<Uint8Array>;
    let wanted = false;
    let ended = false;
    const end = (how: () => void) => {
      if (ended) return;
      ended = true;
      hub.disconnect(client);
      try {
        how();
      } catch { /* already ended */ }
    };
    const deliver = () => {
      if (ended || !wanted) return;
      try {
        const chunk = hub.next(client);
        if (chunk) {
          wanted = false;
          return controller.enqueue(chunk);
        }
        if (client.closed) end(() => controller.close());
      } catch {
        end(() => {});
      }
    };
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
        client.abort = () => end(() => controller.error(new Error("the service is stopping")));
        client.onwake = deliver;
      },
      pull() {
        wanted = true;
        deliver();
      },
      // Deno cancels the body when the client goes away.
      cancel: () => end(() => {}),
    }, { highWaterMark: 0 });
    return new Response(body, { headers: streamHeaders });
  };

  const requests = options.requests;
  return (request, url) => {
    const path = url.pathname;
    if (path !== "/" && path !== "/results" && !path.startsWith("/results/")) return undefined;
    if (requests) {
      requests[
        path === "/" ? "page" : path === "/results" ? "results" : path === "/results/stream" ? "stream" : "law"
      ]++;
    }
    return handle(request, url).catch((error) => {
      log.error("Results request failed: {error}", { error: (error as Error).message });
      return json(503, { error: "results are unavailable right now" }, { "retry-after": retryAfter });
    });
  };
}

function cookie(request: Request, name: string): string | undefined {
  for (const part of (request.headers.get("cookie") ?? "").split(";")) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) {
      try {
        return decodeURIComponent(value.join("="));
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** A policy that allows the page's own inline script and style (by hash), its stream, and nothing else. */
async function cspFor(html: string): Promise<string> {
  const hash = async (text: string) =>
    `'sha256-${
      btoa(
        String.fromCharCode(...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)))),
      )
    }'`;
  const script = html.match(/<script>([\s\S]*?)<\/script>/)?.[1] ?? "";
  const style = html.match(/<style>([\s\S]*?)<\/style>/)?.[1] ?? "";
  return `default-src 'none'; script-src ${await hash(script)}; style-src ${await hash(style)}; ` +
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}

const EMBARGO_PAGE = `<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Results not yet public</title>
<h1>Results not yet public</h1><p>The results are under embargo. Open this page with its link (<code>/?token=…</code>).</p></html>`;

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", "cache-control": "no-cache", ...headers },
  });
}
