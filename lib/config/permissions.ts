/**
 * Permissions: the addresses the service reaches, and a check at start that
 * this process may reach them. tools/permissions.ts turns the same addresses
 * into the `--allow-net` flags of `deno task start` and `deno task compile`.
 *
 * @example
 * ```ts
 * import { deniedEndpoints } from "./permissions.ts";
 * for (const reason of deniedEndpoints(config)) console.error(reason);
 * ```
 *
 * @module
 */

import type { Config } from "./config.ts";
import { bracket, hostPort } from "./url.ts";

/** PostgreSQL's default port, by URL scheme. */
const POSTGRES_PORTS = { postgres: 5432, postgresql: 5432 };

/** The parts of the configuration the permission set depends on. */
export type PermissionConfig = Pick<
  Config,
  | "rabbitmqUrls"
  | "databaseUrl"
  | "resultsDatabaseUrl"
  | "httpHost"
  | "prometheusPort"
  | "rabbitmqCaFile"
  | "postgresSslRootCert"
>;

/** One network address the service uses, and the variables that set it. */
export interface Endpoint {
  what: "RabbitMQ" | "PostgreSQL" | "HTTP";
  /** `host:port` as `--allow-net` and `Deno.permissions` take it. */
  address: string;
  host: string;
  port: number;
  variables: string;
}

/**
 * What a process runs: the counting service (`main.ts`), or a results-only instance (`main.ts results`), which
 * reaches no broker and only the results' database (`RESULTS_DATABASE_URL`, else `DATABASE_URL`).
 */
export type Role = "counting" | "results";

/** The addresses `config` makes the service (of `role`) connect to (every broker node, database) and listen on (HTTP). */
export function endpoints(config: PermissionConfig, role: Role = "counting"): Endpoint[] {
  if (role === "results") {
    const results = endpoint(config.resultsDatabaseUrl ?? config.databaseUrl, POSTGRES_PORTS);
    return [{
      what: "PostgreSQL",
      ...results,
      address: hostPort(results.host, results.port),
      variables: config.resultsDatabaseUrl === undefined
        ? "DATABASE_URL or POSTGRES_HOST/POSTGRES_PORT"
        : "RESULTS_DATABASE_URL",
    }, httpEndpoint(config)];
  }
  const brokers = config.rabbitmqUrls.map((url) => endpoint(url, { amqp: 5672, amqps: 5671 }));
  const database = endpoint(config.databaseUrl, POSTGRES_PORTS);
  const results = config.resultsDatabaseUrl === undefined
    ? undefined
    : endpoint(config.resultsDatabaseUrl, POSTGRES_PORTS);
  const databaseAddress = hostPort(database.host, database.port);
  const resultsAddress = results && hostPort(results.host, results.port);
  const unique = new Map(brokers.map((broker) => [hostPort(broker.host, broker.port), broker]));
  return [
    ...[...unique].map(([address, broker]): Endpoint => ({
      what: "RabbitMQ",
      ...broker,
      address,
      variables: "RABBITMQ_URL or RABBITMQ_HOST/RABBITMQ_PORT",
    })),
    {
      what: "PostgreSQL",
      ...database,
      address: databaseAddress,
      variables: "DATABASE_URL or POSTGRES_HOST/POSTGRES_PORT",
    },
    // The live results' session, beside a transaction pooler (the same address needs no second entry).
    ...(results && resultsAddress !== databaseAddress
      ? [{ what: "PostgreSQL" as const, ...results, address: resultsAddress!, variables: "RESULTS_DATABASE_URL" }]
      : []),
    httpEndpoint(config),
  ];
}

function httpEndpoint(config: PermissionConfig): Endpoint {
  return {
    what: "HTTP",
    host: config.httpHost,
    port: config.prometheusPort,
    // Port 0 asks the system for a free port: only the host can be allowed then.
    address: config.prometheusPort === 0 ? bracket(config.httpHost) : hostPort(config.httpHost, config.prometheusPort),
    variables: "HTTP_HOST/PROMETHEUS_PORT",
  };
}

/**
 * What this process may not reach of what `config` names, one sentence each,
 * naming the host:port and the variables that set it; empty when all is granted.
 *
 * main.ts calls it before connecting: without it a denied host surfaces from
 * node's DNS shim as `getaddrinfo EPERM <host>`, and the broker client retries
 * that for seconds as if the broker were down. `only` limits it to some
 * endpoints (the operator's tools reach one server each); `role` "results" is a
 * results-only instance's.
 */
export function deniedEndpoints(
  config: PermissionConfig,
  only?: readonly Endpoint["what"][],
  role: Role = "counting",
): string[] {
  return endpoints(config, role)
    .filter(({ what }) => only === undefined || only.includes(what))
    .filter(({ address }) => Deno.permissions.querySync({ name: "net", host: address }).state !== "granted")
    .map(({ what, address, variables }) =>
      `not permitted to ${
        what === "HTTP" ? "listen for HTTP on" : `connect to ${what} at`
      } ${address} (${variables}): ` +
      "it is outside this process's --allow-net. The permission set is computed from the configuration " +
      "(tools/permissions.ts): start with `deno task start` (`deno task results`), or rebuild the binary with `deno task compile` " +
      "under this configuration"
    );
}

function endpoint(url: string, defaultPorts: Record<string, number>): { host: string; port: number } {
  // new URL keeps IPv6 literals in brackets; bracket() puts them back where needed.
  const parsed = new URL(url);
  const scheme = parsed.protocol.slice(0, -1);
  return {
    host: parsed.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: parsed.port ? Number(parsed.port) : defaultPorts[scheme],
  };
}
