/**
 * An nginx of its own for a test or the benchmark, in front of a results
 * instance: Debian's `nginx` on a free loopback port, running the shipped
 * deploy/nginx/results.conf itself, with only its upstream address, listen port
 * and file paths replaced (each replacement must match the shipped file once, so
 * a change to it that the harness does not follow fails loudly). A small main
 * configuration around it (`daemon off`, one worker, pid, error log and temp
 * paths in a temp dir under /tmp) includes it as Debian's nginx.conf includes
 * conf.d/. Disposing it stops nginx and removes the dir.
 *
 * {@link nginxSkipReason} says why it cannot run here: tests skip with that line.
 *
 * @example
 * ```ts
 * await using proxy = await startNginx({ upstream: "127.0.0.1:8001" });
 * await fetch(`${proxy.url}/results`);
 * ```
 *
 * @module
 */

import { freePort } from "./service.ts";
import { startServerProcess } from "./process.ts";

const BINARY = "/usr/sbin/nginx";
/** The configuration the product ships. */
export const SHIPPED_CONF = new URL("../../deploy/nginx/results.conf", import.meta.url);

/** A running nginx. */
export interface Nginx extends AsyncDisposable {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** The configuration it runs: the shipped file with its address, port and paths replaced. */
  conf: string;
  /** Its access log so far (the shipped `vote_results` format: `cache=<status>` per request). */
  accessLog(): Promise<string>;
}

/** Options of {@link startNginx}. */
export interface NginxOptions {
  /** `host:port` of the results instance it proxies to. */
  upstream: string;
  /** Worker processes. @default 1 */
  workers?: number;
}

/** Why nginx cannot be started here; `undefined` when it can. */
export function nginxSkipReason(): string | undefined {
  try {
    Deno.statSync(BINARY);
  } catch {
    return `${BINARY} is absent (apt-get install nginx)`;
  }
  return undefined;
}

/** The shipped configuration with `replacements` made, each of which must match exactly once. */
export function templated(shipped: string, replacements: [RegExp, string][]): string {
  let conf = shipped;
  for (const [pattern, replacement] of replacements) {
    const matches = conf.match(new RegExp(pattern.source, "gm"))?.length ?? 0;
    if (matches !== 1) throw new Error(`deploy/nginx/results.conf: ${pattern} matches ${matches} times, not once`);
    conf = conf.replace(new RegExp(pattern.source, "m"), replacement);
  }
  return conf;
}

/** Starts nginx with the shipped configuration and waits until it accepts connections. */
export async function startNginx(options: NginxOptions): Promise<Nginx> {
  const reason = nginxSkipReason();
  if (reason) throw new Error(`cannot start nginx: ${reason}`);
  const dir = await Deno.makeTempDir({ prefix: "vote-nginx-", dir: "/tmp" });
  // Workers run as nobody when nginx starts as root: they must reach the cache under the dir.
  await Deno.chmod(dir, 0o755);
  const port = freePort();
  const conf = templated(await Deno.readTextFile(SHIPPED_CONF), [
    [/^(\s*)server 127\.0\.0\.1:8001;/, `$1server ${options.upstream};`],
    [/^(\s*)listen 80;/, `$1listen 127.0.0.1:${port};`],
    [/\/var\/cache\/nginx\/vote-results/, `${dir}/cache`],
    [/\/var\/log\/nginx\/vote-results\.access\.log/, `${dir}/access.log`],
  ]);
  await Deno.writeTextFile(`${dir}/results.conf`, conf);
  const main = [
    "daemon off;",
    `worker_processes ${options.workers ?? 1};`,
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    "events { worker_connections 4096; }",
    "http {",
    ...["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((temp) => `  ${temp}_temp_path ${dir}/${temp}_temp;`),
    `  include ${dir}/results.conf;`,
    "}",
  ].join("\n");
  await Deno.writeTextFile(`${dir}/nginx.conf`, main + "\n");
  const nginx = await startServerProcess(
    "nginx",
    BINARY,
    ["-p", `${dir}/`, "-e", `${dir}/error.log`, "-c", `${dir}/nginx.conf`],
    port,
    { failureLog: (printed) => Deno.readTextFile(`${dir}/error.log`).catch(() => "").then((log) => printed + log) },
  ).catch(async (error) => {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  });
  // nginx's fast shutdown on SIGTERM: the master ends its workers, then itself.
  const stop = async () => {
    await nginx.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    conf,
    accessLog: () => Deno.readTextFile(`${dir}/access.log`).catch(() => ""),
    [Symbol.asyncDispose]: stop,
  };
}
