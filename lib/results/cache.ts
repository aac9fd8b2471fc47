/**
 * HTTP caching of the results and the page: their `Cache-Control`, their
 * strong `ETag` and the `If-None-Match` test that turns a request into a 304.
 *
 * The tag is a digest of the representation's bytes, and those bytes are a
 * function of `vote_results` alone (each law's totals, version and last
 * change; no time of reading, nothing of the instance), so every instance
 * gives the same tag for the same totals, and a cache in front of several
 * instances revalidates against any of them.
 *
 * Public results (no `RESULTS_TOKEN`) may be kept by shared caches for
 * `RESULTS_CACHE_SECONDS` (N) and served stale for N more while one request
 * fetches the next (`stale-while-revalidate=N`): a viewer behind such a cache
 * sees totals at most 2 N old, and the service gets one request per N per
 * route and cache. Under an embargo (`RESULTS_TOKEN`) nothing may be stored:
 * `private, no-store`.
 *
 * @example
 * ```ts
 * import { cacheControl, entityTag, notModified } from "./cache.ts";
 * const tag = await entityTag(body);
 * if (notModified(request, tag)) return new Response(null, { status: 304, headers: { etag: tag } });
 * ```
 *
 * @module
 */

/** `Cache-Control` of the results and the page: `cacheSeconds` when public, nothing stored under a token. */
export function cacheControl(options: { cacheSeconds: number; token: string | undefined }): string {
  if (options.token !== undefined) return "private, no-store";
  const n = options.cacheSeconds;
  return n === 0 ? "public, no-cache" : `public, max-age=${n}, stale-while-revalidate=${n}`;
}

/** A strong entity tag for `body`: the first 128 bits of its SHA-256, base64url, quoted. */
export async function entityTag(body: string | Uint8Array): Promise<string> {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  const base64 = btoa(String.fromCharCode(...digest.subarray(0, 16)));
  return `"${base64.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "")}"`;
}

/**
 * True when `request`'s `If-None-Match` names `tag` (or is `*`): the client holds this representation.
 * The comparison is weak, as RFC 9110 §13.1.2 asks of `If-None-Match`: `W/"x"` matches `"x"`.
 */
export function notModified(request: Request, tag: string): boolean {
  const header = request.headers.get("if-none-match");
  if (header === null) return false;
  return header.split(",").some((part) => {
    const candidate = part.trim();
    return candidate === "*" || candidate.replace(/^W\//, "") === tag;
  });
}
