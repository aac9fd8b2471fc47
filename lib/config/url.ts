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

/** `url` with its password replaced by `***`, safe to log; a PostgreSQL URL may name several hosts. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    const multiHost = parseDatabaseUrl(url);
    if (multiHost === undefined) return "<unparseable URL>";
    const { url: first, authority } = multiHost;
    if (first.password) first.password = "***";
    // The first host's form, redacted, with the whole host list put back.
    return first.toString().replace(`@${first.host}`, `@${authority}`).replace(`//${first.host}`, `//${authority}`);
  }
}

/** One host of a PostgreSQL URL, with its port (5432 when the URL gives none). */
export interface DatabaseHost {
  host: string;
  port: number;
  /** `host:port`, as logs, `/status` and the `postgres_connected_host` metric show it. */
  address: string;
}

/** A PostgreSQL URL read as libpq reads it: see {@link parseDatabaseUrl}. */
export interface DatabaseAddress {
  /** The URL with its first host only: user, password, database and options as `new URL` reads them. */
  url: URL;
  /** Every host, in the order given. */
  hosts: DatabaseHost[];
  /** The hosts as the URL writes them (`h1:5432,h2:5433`). */
  authority: string;
}

/**
 * A PostgreSQL URL, which may name several hosts as libpq's multi-host form does
 * (`postgres://user:pass@h1:5432,[::1]:5433/db?target_session_attrs=read-write`); `undefined` when it is
 * not a URL, or a host of the list is empty or has a port out of 1 to 65535.
 */
export function parseDatabaseUrl(value: string): DatabaseAddress | undefined {
  const match = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/is.exec(value);
  if (match === null) return undefined;
  const [, scheme, authority, rest] = match;
  const at = authority.lastIndexOf("@");
  const hostsPart = authority.slice(at + 1);
  const nodes = hostsPart.includes(",") ? hostList(hostsPart) : [undefined];
  if (nodes === undefined) return undefined;
  let url: URL;
  try {
    const first = nodes[0] === undefined ? hostsPart : hostPort(nodes[0].host, nodes[0].port ?? 5432);
    url = new URL(scheme + authority.slice(0, at + 1) + first + rest);
  } catch {
    return undefined;
  }
  const hosts = nodes.map((node) => {
    const host = node?.host ?? url.hostname.replace(/^\[(.*)\]$/, "$1");
    const port = node ? node.port ?? 5432 : url.port ? Number(url.port) : 5432;
    return { host, port, address: hostPort(host, port) };
  });
  return { url, hosts, authority: hostsPart };
}

/** A comma-separated list of URLs, each redacted (empty items kept empty). */
export function redactUrls(list: string): string {
  return list.split(",").map((item) => item.trim() === "" ? "" : redactUrl(item.trim())).join(",");
}

/**
 * A comma-separated list of `host` or `host:port` (`mq1,mq2:5673,[::1]:5674`; a bare IPv6 literal such as
 * `::1` has no port); `undefined` when an item is empty or its port is not 1 to 65535.
 */
export function hostList(value: string): { host: string; port: number | undefined }[] | undefined {
  const nodes = value.split(",").map((item) => {
    const node = item.trim();
    const match = /^\[([^\]]+)\](?::(\d+))?$/.exec(node) ?? // [v6] or [v6]:port
      (node.split(":").length === 2 ? /^([^:]+):(\d+)$/.exec(node) : /^([^:[\]]+|[^[\]]*:[^[\]]*)()$/.exec(node));
    const port = match?.[2] ? Number(match[2]) : undefined;
    if (match === null || (port !== undefined && (port < 1 || port > 65535))) return undefined;
    return { host: match[1], port };
  });
  return nodes.some((node) => node === undefined) ? undefined : nodes as { host: string; port: number | undefined }[];
}

/**
 * A URL from its parts, each percent-encoded; an IPv6 literal host gets its brackets. Several hosts (a
 * PostgreSQL URL in libpq's multi-host form) are written `h1:p1,h2:p2`, `port` for those without one.
 */
export function buildUrl(
  scheme: string,
  user: string,
  password: string,
  host: string | { host: string; port: number | undefined }[],
  port: number,
  path: string,
): string {
  const hosts = typeof host === "string"
    ? hostPort(host, port)
    : host.map((node) => hostPort(node.host, node.port ?? port)).join(",");
  return `${scheme}://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${hosts}/${encodeURIComponent(path)}`;
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

/**
 * The user and password of `url`, percent-decoded as UTF-8 (how {@link buildUrl} encodes them, and how
 * postgres.js reads them). amqplib decodes them as Latin-1 (`unescape`), which garbles any non-ASCII
 * character: the broker's credentials are therefore passed to it decoded, from here.
 *
 * @throws {URIError} when a `%` in them is not percent-encoding (the configuration refuses such URLs)
 */
export function urlCredentials(url: string): { user: string; password: string } {
  const parsed = new URL(url);
  return { user: decodeURIComponent(parsed.username), password: decodeURIComponent(parsed.password) };
}

/**
 * Which part of `url` (user, password or path) holds a `%` that is not percent-encoding of UTF-8
 * (`pa%ss`), or undefined when every part decodes. Such a part cannot be read without ambiguity
 * (`%41` would be an `A`): it must be written percent-encoded (`%` as `%25`).
 */
export function undecodablePart(url: URL): "user" | "password" | "path" | undefined {
  const parts = { user: url.username, password: url.password, path: url.pathname } as const;
  for (const [name, value] of Object.entries(parts)) {
    try {
      decodeURIComponent(value);
    } catch {
      return name as keyof typeof parts;
    }
  }
  return undefined;
}
