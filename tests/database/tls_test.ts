/**
 * TLS to PostgreSQL, for real: the service's pool (lib/database/pool.ts) against a
 * server that speaks TLS, under each POSTGRES_SSLMODE.
 *
 * The server is the shared one (TEST_POSTGRES_URL) when `SHOW ssl` is on there.
 * Otherwise the test starts a private, throw-away cluster on a free loopback
 * port with a certificate it makes with openssl, signed by its own CA (which
 * also lets verify-full succeed); that needs PostgreSQL's server binaries
 * (`pg_config --bindir`) and openssl on this machine. With neither, the test is
 * skipped and says why.
 */

import assert from "node:assert/strict";
import { connectDatabase, type Sql, warmUp } from "../../lib/database/pool.ts";
import { type Config, loadConfig } from "../../lib/config/config.ts";
import { startService } from "../../lib/service.ts";
import { POSTGRES_URL } from "../support/servers.ts";
import { freePort } from "../support/service.ts";

/** A PostgreSQL server that speaks TLS. */
interface TlsServer extends AsyncDisposable {
  /** A URL of a database on it (no sslmode in it: the mode under test is the service's option). */
  url: string;
  /** PEM file of the CA that signed the server's certificate, when known. */
  ca: string | undefined;
  /** Where certificates made for the test go. */
  dir: string;
  describe: string;
}

async function run(command: string, args: string[], options: { allowFail?: boolean } = {}): Promise<string> {
  const { code, stdout, stderr } = await new Deno.Command(command, { args, stdin: "null" }).output();
  const text = new TextDecoder().decode(stdout);
  if (code !== 0 && !options.allowFail) {
    throw new Error(`${command} ${args.join(" ")} exited ${code}: ${new TextDecoder().decode(stderr)}`);
  }
  return text;
}

async function found(command: string, args: string[]): Promise<string | undefined> {
  try {
    return (await run(command, args)).trim();
  } catch {
    return undefined;
  }
}

async function sharedServerSsl(): Promise<boolean | string> {
  const sql = connectDatabase({
    databaseUrl: POSTGRES_URL,
    postgresMaxConnections: 1,
    postgresSslMode: "disable",
    postgresSslRootCert: undefined,
  });
  try {
    const [{ ssl }] = await sql<{ ssl: string }[]>`show ssl`;
    return ssl === "on";
  } catch (error) {
    return `cannot ask ${POSTGRES_URL.replace(/:[^:@/]*@/, ":***@")} (${(error as Error).message})`;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** Makes a CA in `dir` as `<name>.crt`/`<name>.key`, and optionally a server certificate it signs. */
async function makeCa(dir: string, name: string): Promise<string> {
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "3650",
    "-subj",
    `/CN=vote-aggregator test ${name}`,
    "-keyout",
    `${dir}/${name}.key`,
    "-out",
    `${dir}/${name}.crt`,
  ]);
  return `${dir}/${name}.crt`;
}

async function makeServerCertificate(dir: string, ca: string): Promise<void> {
  // Only the name: connecting by address must then fail verify-full's host name check.
  await Deno.writeTextFile(`${dir}/san.ext`, "subjectAltName=DNS:localhost\n");
  await run("openssl", [
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-subj",
    "/CN=localhost",
    "-keyout",
    `${dir}/server.key`,
    "-out",
    `${dir}/server.csr`,
  ]);
  await run("openssl", [
    "x509",
    "-req",
    "-days",
    "3650",
    "-in",
    `${dir}/server.csr`,
    "-CA",
    `${dir}/${ca}.crt`,
    "-CAkey",
    `${dir}/${ca}.key`,
    "-CAcreateserial",
    "-extfile",
    `${dir}/san.ext`,
    "-out",
    `${dir}/server.crt`,
  ]);
  await Deno.chmod(`${dir}/server.key`, 0o600);
}

/**
 * Starts a private cluster with `ssl = on`. PostgreSQL refuses to run as root,
 * so as root it runs as the `postgres` user (runuser), which must own its files.
 */
async function startPrivateServer(bindir: string): Promise<TlsServer> {
  const dir = await Deno.makeTempDir({ prefix: "va_tls_" });
  const asRoot = (await run("id", ["-u"])).trim() === "0";
  const as = (command: string, args: string[]) =>
    asRoot ? run("runuser", ["-u", "postgres", "--", command, ...args]) : run(command, args);
  try {
    const ca = await makeCa(dir, "ca");
    await makeServerCertificate(dir, "ca");
    if (asRoot) await run("chown", ["-R", "postgres:", dir]);
    await as(`${bindir}/initdb`, ["-D", `${dir}/data`, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
    const port = freePort();
    await Deno.writeTextFile(
      `${dir}/data/postgresql.conf`,
      [
        "listen_addresses = 'localhost'",
        `port = ${port}`,
        `unix_socket_directories = '${dir}'`,
        "ssl = on",
        `ssl_cert_file = '${dir}/server.crt'`,
        `ssl_key_file = '${dir}/server.key'`,
        "fsync = off",
        "max_connections = 20",
        "",
      ].join("\n"),
      { append: true },
    );
    await as(`${bindir}/pg_ctl`, ["-D", `${dir}/data`, "-l", `${dir}/server.log`, "-w", "-t", "30", "start"]);
    return {
      url: `postgres://postgres@127.0.0.1:${port}/postgres`,
      ca,
      dir,
      describe: `a private cluster on 127.0.0.1:${port} (the shared server has ssl off)`,
      async [Symbol.asyncDispose]() {
        await as(`${bindir}/pg_ctl`, ["-D", `${dir}/data`, "-m", "immediate", "-w", "stop"]).catch(() => {});
        await Deno.remove(dir, { recursive: true });
      },
    };
  } catch (error) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

const shared = await sharedServerSsl();
const bindir = shared === true ? undefined : await found("pg_config", ["--bindir"]);
const openssl = await found("openssl", ["version"]);
const privateServerOk = bindir !== undefined && openssl !== undefined &&
  await Deno.stat(`${bindir}/initdb`).then(() => true, () => false);
const skipReason = shared === true || privateServerOk ? undefined : [
  shared === false ? "the shared PostgreSQL has ssl off (SHOW ssl)" : shared,
  bindir === undefined ? "no PostgreSQL server binaries (pg_config --bindir) for a private TLS cluster" : undefined,
  openssl === undefined ? "no openssl to make its certificate" : undefined,
].filter(Boolean).join("; ");
if (skipReason) console.log(`tls_test: skipped: ${skipReason}`);

async function tlsServer(): Promise<TlsServer> {
  if (shared === true) {
    const dir = await Deno.makeTempDir({ prefix: "va_tls_" });
    return {
      url: POSTGRES_URL,
      ca: undefined,
      dir,
      describe: "the shared server (ssl on)",
      [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
    };
  }
  return await startPrivateServer(bindir!);
}

// node:tls's words for a certificate chain that does not lead to a trusted CA.
const UNTRUSTED =
  /unable to verify the first certificate|self-signed certificate|unable to get local issuer certificate/;

type DatabaseOptions = Pick<Config, "postgresSslMode" | "postgresSslRootCert">;

/** Opens the service's pool with `options`, runs `fn` on it, closes it. */
async function withPool<T>(url: string, options: DatabaseOptions, fn: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = connectDatabase({ databaseUrl: url, postgresMaxConnections: 1, ...options });
  try {
    await warmUp(sql, 1);
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

async function encrypted(sql: Sql): Promise<boolean> {
  const [{ ssl }] = await sql<{ ssl: boolean }[]>`select ssl from pg_stat_ssl where pid = pg_backend_pid()`;
  return ssl;
}

Deno.test({
  name: "tls: POSTGRES_SSLMODE against a PostgreSQL that speaks TLS",
  ignore: skipReason !== undefined,
  async fn(t) {
    await using server = await tlsServer();
    console.log(`tls_test: using ${server.describe}`);

    await t.step("require: the pool's connections are encrypted", async () => {
      assert.equal(
        await withPool(server.url, { postgresSslMode: "require", postgresSslRootCert: undefined }, encrypted),
        true,
      );
    });

    await t.step("prefer (the default): encrypted when the server offers TLS", async () => {
      assert.equal(
        await withPool(server.url, { postgresSslMode: "prefer", postgresSslRootCert: undefined }, encrypted),
        true,
      );
    });

    await t.step("disable: plain", async () => {
      assert.equal(
        await withPool(server.url, { postgresSslMode: "disable", postgresSslRootCert: undefined }, encrypted),
        false,
      );
    });

    if (server.ca) {
      const ca = server.ca;
      const byName = server.url.replace("127.0.0.1", "localhost");
      await t.step("verify-full with the CA that signed the server's certificate: encrypted and verified", async () => {
        assert.equal(
          await withPool(byName, { postgresSslMode: "verify-full", postgresSslRootCert: ca }, encrypted),
          true,
        );
      });
      await t.step("verify-full checks the host: a certificate for localhost is refused at 127.0.0.1", async () => {
        await assert.rejects(
          withPool(server.url, { postgresSslMode: "verify-full", postgresSslRootCert: ca }, encrypted),
          /127\.0\.0\.1 is not in the cert's list/,
        );
        // require encrypts without verifying: the same server at the same address is accepted.
        assert.equal(
          await withPool(server.url, { postgresSslMode: "require", postgresSslRootCert: ca }, encrypted),
          true,
        );
      });
    }

    await t.step(
      "verify-full with a CA that did not sign the server's certificate stops the start, saying so",
      async () => {
        const other = await makeCa(server.dir, "other-ca");
        const started = Date.now();
        await assert.rejects(
          withPool(server.url, { postgresSslMode: "verify-full", postgresSslRootCert: other }, encrypted),
          UNTRUSTED,
        );
        // What an operator sees: the service names the database and the reason.
        const config = loadConfig({
          DATABASE_URL: server.url,
          POSTGRES_SSLMODE: "verify-full",
          POSTGRES_SSLROOTCERT: other,
          POSTGRES_MIN_CONNECTIONS: "1",
        });
        await assert.rejects(startService(config), (error: Error) => {
          const address = new URL(server.url).host;
          assert.ok(
            error.message.startsWith(`Cannot connect to PostgreSQL at postgres://postgres@${address}/`),
            error.message,
          );
          assert.match(error.message, UNTRUSTED);
          return true;
        });
        assert.ok(Date.now() - started < 10_000, "it fails at once, not after the connect timeout");
      },
    );

    await t.step("verify-full without a CA file trusts only the public roots, so a private CA fails", async () => {
      await assert.rejects(
        withPool(server.url, { postgresSslMode: "verify-full", postgresSslRootCert: undefined }, encrypted),
        UNTRUSTED,
      );
    });
  },
});
