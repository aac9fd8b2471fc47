/**
 * URLs of the broker and the database: building one from its parts, writing
 * one safely in a log, and writing a host the way `host:port` needs it. It
 * does not decide which variables a URL comes from ({@link ./config.ts} does).
 * Also the web origins a list of allowed origins (`RESULTS_CORS_ORIGINS`) may hold.
 *
 * @example
 * ```ts
 * import { buildUrl, redactUrl } from "./url.ts";
 * const url = buildUrl("amqp", "guest", "s3cret", "::1", 5672, "/");
 * console.log(redactUrl(url)); // amqp://guest:***@[::1]:5672/%2F
 * ```
 *
 * @module
 */

/** `url` with its password replaced by `***`, safe to log. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "<unparseable URL>";
  }
}

/** A URL from its parts, each percent-encoded; an IPv6 literal host gets its brackets. */
export function buildUrl(
  scheme: string,
  user: string,
  password: string,
  host: string,
  port: number,
  path: string,
): string {
  return `${scheme}://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${hostPort(host, port)}/${
    encodeURIComponent(path)
  }`;
}

/** `host` as written before `:port`: IPv6 literals in brackets (`[::1]`), others as they are. */
export function bracket(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}

/** `host:port`, with an IPv6 literal bracketed (`[::1]:5432`), as `--allow-net` and URLs write it. */
export function hostPort(host: string, port: number): string {
  return `${bracket(host)}:${port}`;
}

/**
 * A comma-separated list of web origins (`https://host[:port]`, no path), or `*` for any: `["*"]`.
 *
 * @returns the origins (empty for ""), or undefined when one is not an origin
 */
export function parseOrigins(value: string): string[] | undefined {
  const list = value.split(",").map((o) => o.trim()).filter((o) => o !== "");
  if (list.includes("*")) return ["*"];
  const valid = list.every((origin) => {
    try {
      const url = new URL(origin);
      return (url.protocol === "http:" || url.protocol === "https:") && url.origin === origin;
    } catch {
      return false;
    }
  });
  return valid ? list : undefined;
}
