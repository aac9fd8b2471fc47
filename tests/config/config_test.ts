import assert from "node:assert/strict";
import { ConfigError, envWithDotenv, loadConfig } from "../../lib/config/config.ts";
import { redactUrl, urlCredentials } from "../../lib/config/url.ts";
import { VARIABLE_NAMES } from "../../lib/config/variables.ts";

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error;
  }
  assert.fail(`loadConfig(${JSON.stringify(env)}) did not throw`);
}

Deno.test("config: the seed's defaults with an empty environment", () => {
  const config = loadConfig({});
  assert.equal(config.rabbitmqUrls[0], "amqp://guest:guest@localhost:5672/%2F");
  assert.equal(config.rabbitmqQueue, "votes.aggregation");
  assert.equal(config.rabbitmqPrefetchCount, 3000);
  assert.equal(config.databaseUrl, "postgres://postgres:postgres@localhost:5432/election_votes");
  assert.equal(config.postgresMinConnections, 2);
  assert.equal(config.postgresMaxConnections, 10);
  assert.equal(config.batchSize, 1000);
  assert.equal(config.batchTimeoutMs, 1000);
  assert.equal(config.maxRetryAttempts, 3);
  assert.equal(config.retryDelayMs, 1000);
  assert.equal(config.prometheusPort, 8001);
  assert.equal(config.logLevel, "INFO");
  assert.equal(config.adminToken, undefined);
  assert.equal(config.startupTimeoutMs, 0, "start-up waits for the servers for ever");
  assert.equal(loadConfig({ STARTUP_TIMEOUT_SECONDS: "90" }).startupTimeoutMs, 90_000);
});

Deno.test("config: the seed's variables build the URLs; RABBITMQ_URL and DATABASE_URL win", () => {
  const parts = loadConfig({
    RABBITMQ_HOST: "mq",
    RABBITMQ_PORT: "5673",
    RABBITMQ_USER: "u",
    RABBITMQ_PASSWORD: "p@ss/word",
    RABBITMQ_VHOST: "votes",
    POSTGRES_HOST: "db",
    POSTGRES_DB: "election",
    POSTGRES_USER: "agg",
    POSTGRES_PASSWORD: "s3cret",
  });
  assert.equal(parts.rabbitmqUrls[0], "amqp://u:p%40ss%2Fword@mq:5673/votes");
  assert.equal(parts.databaseUrl, "postgres://agg:s3cret@db:5432/election");
  assert.equal(loadConfig({ RABBITMQ_TLS: "true" }).rabbitmqUrls[0].startsWith("amqps://"), true);
  const urls = loadConfig({
    RABBITMQ_URL: "amqps://a:b@broker:5671/x",
    RABBITMQ_HOST: "ignored",
    DATABASE_URL: "postgresql://c:d@pg/y",
    POSTGRES_HOST: "ignored",
  });
  assert.equal(urls.rabbitmqUrls[0], "amqps://a:b@broker:5671/x");
  assert.equal(urls.databaseUrl, "postgresql://c:d@pg/y");
});

Deno.test("config: seconds, levels and choices are parsed", () => {
  const config = loadConfig({
    BATCH_TIMEOUT_SECONDS: "0.25",
    RETRY_DELAY_SECONDS: "2",
    LOG_LEVEL: "warn",
    LOG_FORMAT: "JSON",
    RABBITMQ_QUEUE_TYPE: "Quorum",
    POSTGRES_SSLMODE: "verify-full",
  });
  assert.equal(config.batchTimeoutMs, 250);
  assert.equal(config.retryDelayMs, 2000);
  assert.equal(config.logLevel, "WARNING");
  assert.equal(config.logFormat, "json");
  assert.equal(config.rabbitmqQueueType, "quorum");
  assert.equal(config.postgresSslMode, "verify-full");
});

for (
  const [variable, value, rule] of [
    ["RABBITMQ_PORT", "amqp", "integer from 1 to 65535"],
    ["POSTGRES_PORT", "70000", "integer from 1 to 65535"],
    ["BATCH_SIZE", "0", "integer from 1"],
    ["BATCH_SIZE", "1.5", "integer from 1"],
    ["BATCH_TIMEOUT_SECONDS", "-1", "number of seconds"],
    ["BATCH_TIMEOUT_SECONDS", "soon", "number of seconds"],
    ["RABBITMQ_PREFETCH_COUNT", "0", "integer from 1"],
    ["LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"],
    ["LOG_FORMAT", "xml", "one of text, json"],
    ["RABBITMQ_QUEUE_TYPE", "stream", "one of classic, quorum"],
    ["POSTGRES_SSLMODE", "maybe", "one of disable"],
    ["RABBITMQ_TLS", "sometimes", "one of true"],
    ["DATABASE_URL", "mysql://x@y/z", "must start with postgres://"],
    ["RESULTS_DATABASE_URL", "mysql://x@y/z", "must start with postgres://"],
    ["RESULTS_DATABASE_URL", "not a url", "must be a URL"],
    ["RABBITMQ_URL", "not a url", "must be a URL"],
    ["POSTGRES_MIN_CONNECTIONS", "20", "must not exceed POSTGRES_MAX_CONNECTIONS"],
    ["ADMIN_TOKEN", "short", "at least 16 characters"],
    ["RESULTS_TOKEN", "short", "at least 16 characters"],
    ["RESULTS_MAX_CLIENTS", "0", "integer from 1"],
    ["RESULTS_HEARTBEAT_SECONDS", "0.5", "number of seconds from 1"],
    ["RESULTS_EVENT_INTERVAL_MS", "-1", "integer from 0"],
    ["RESULTS_CACHE_SECONDS", "1.5", "integer from 0 to 3600"],
    ["RESULTS_PAGE_MODE", "sse", "one of stream, poll"],
    ["RESULTS_ENABLED", "maybe", "one of true"],
    ["RESULTS_CORS_ORIGINS", "https://a.example/path", "must be * or origins"],
    ["RESULTS_CORS_ORIGINS", "ftp://a.example", "must be * or origins"],
    ["DATABASE_URL", "postgres://u:pa%ss@host/db", "percent-encode it (% as %25)"],
    ["DATABASE_URL", "postgres://u%zz:p@host/db", "its user holds a %"],
    ["DATABASE_URL", "postgres://u:p@host/db%e9", "its path holds a %"],
    ["RESULTS_DATABASE_URL", "postgres://u:pa%ss@host/db", "percent-encode it (% as %25)"],
    ["RABBITMQ_URL", "amqp://u:pa%ss@host/", "its password holds a % that is not percent-encoding"],
    ["CONNECT_TIMEOUT_SECONDS", "0", "number of seconds from 0.1"],
    ["STARTUP_TIMEOUT_SECONDS", "-1", "number of seconds from 0 to 86400"],
    ["STARTUP_TIMEOUT_SECONDS", "forever", "number of seconds from 0"],
    ["MAX_MESSAGE_BYTES", "10", "integer from 256"],
  ] as const
) {
  Deno.test(`config: ${variable}=${JSON.stringify(value)} stops the start naming the variable`, () => {
    const error = configError({ [variable]: value });
    assert.equal(error.variable, variable);
    assert.match(error.message, new RegExp(`^Invalid ${variable}: `));
    assert.ok(error.message.includes(rule), error.message);
    assert.equal(error.message.includes("\n"), false);
  });
}

Deno.test("config: a percent-encoded % or UTF-8 password is read as written, a raw % never reaches a client", () => {
  assert.equal(
    loadConfig({ DATABASE_URL: "postgres://u:pa%25ss@host/db" }).databaseUrl,
    "postgres://u:pa%25ss@host/db",
  );
  const url = loadConfig({ RABBITMQ_PASSWORD: "pa%ss-é" }).rabbitmqUrls[0];
  assert.deepEqual(urlCredentials(url), { user: "guest", password: "pa%ss-é" });
  assert.ok(!configError({ DATABASE_URL: "postgres://u:hunter2%@db/x" }).message.includes("hunter2"));
});

/** Runs main.ts with only `env`; asserts it stops with exit 2 and one line; returns that line. */
async function configExit(env: Record<string, string>): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--allow-env", "--allow-read=.env", new URL("../../main.ts", import.meta.url).pathname],
    env: { ...env, PROMETHEUS_PORT: "0" },
    cwd: await Deno.makeTempDir({ prefix: "config_test_" }),
    clearEnv: true,
  }).output();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  assert.equal(out.code, 2, stderr);
  assert.equal(stderr.split("\n").length, 1, stderr);
  return stderr;
}

Deno.test("config: a % in DATABASE_URL's password stops main.ts with exit 2 and one line naming DATABASE_URL", async () => {
  const stderr = await configExit({ DATABASE_URL: "postgres://u:pa%ss@127.0.0.1:1/db" });
  assert.match(stderr, /^vote-aggregator: Invalid DATABASE_URL: .*percent-encode/);
  assert.ok(!stderr.includes("pa%ss"), stderr);
});

Deno.test("config: errors and redacted URLs never show secrets", () => {
  assert.ok(!configError({ DATABASE_URL: "mysql://u:hunter2@db/x" }).message.includes("hunter2"));
  assert.ok(!configError({ RABBITMQ_URL: "amqp//u:hunter2@db/x" }).message.includes("hunter2"));
  assert.ok(!configError({ ADMIN_TOKEN: "hunter2" }).message.includes("hunter2"));
  assert.ok(!configError({ RESULTS_TOKEN: "hunter2" }).message.includes("hunter2"));
  assert.equal(redactUrl("amqp://guest:hunter2@h:5672/"), "amqp://guest:***@h:5672/");
});

Deno.test("config: several PostgreSQL hosts, in libpq's multi-host DATABASE_URL or a POSTGRES_HOST list", () => {
  const url = "postgres://u:p@10.0.0.1:5432,[fd00::2]:5433/election_votes?target_session_attrs=read-write";
  assert.equal(loadConfig({ DATABASE_URL: url }).databaseUrl, url);
  assert.equal(
    loadConfig({ POSTGRES_HOST: "10.0.0.1, db2:5433,::1", POSTGRES_PORT: "6432" }).databaseUrl,
    "postgres://postgres:postgres@10.0.0.1:6432,db2:5433,[::1]:6432/election_votes",
  );
  // One host is the URL it always was.
  assert.equal(loadConfig({ POSTGRES_HOST: "db" }).databaseUrl, "postgres://postgres:postgres@db:5432/election_votes");
  assert.equal(
    redactUrl("postgres://u:hunter2@h1:5432,[::1]:5433/db"),
    "postgres://u:***@h1:5432,[::1]:5433/db",
  );
});

for (
  const [variable, value, rule] of [
    ["POSTGRES_HOST", "10.0.0.1,", "must be host or host:port, or several separated by commas"],
    ["POSTGRES_HOST", "db1,db2:70000", "must be host or host:port"],
    ["DATABASE_URL", "postgres://u:hunter2@h1:5432,,h2/db", "several hosts written host:port,host:port, none empty"],
    ["DATABASE_URL", "postgres://u:hunter2@h1:0,h2/db", "several hosts written host:port"],
    ["DATABASE_URL", "postgres://u:hunter2@h1,h2/db?target_session_attrs=standby", "target_session_attrs must be one"],
    ["RESULTS_DATABASE_URL", "postgres://u:hunter2@h1,:5/db", "none empty"],
  ]
) {
  Deno.test(`config: ${variable}="${value}" is refused with one line naming it, no password`, () => {
    const error = configError({ [variable]: value });
    assert.equal(error.variable, variable);
    assert.ok(error.message.includes(rule), error.message);
    assert.ok(!error.message.includes("hunter2"), error.message);
  });
}

Deno.test("config: POSTGRES_HOST=a,,b stops main.ts with exit 2 and one line naming POSTGRES_HOST", async () => {
  assert.match(await configExit({ POSTGRES_HOST: "a,,b" }), /^vote-aggregator: Invalid POSTGRES_HOST: /);
});

Deno.test("config: the results' variables", () => {
  const defaults = loadConfig({});
  assert.deepEqual(
    [
      defaults.resultsToken,
      defaults.resultsCorsOrigins,
      defaults.resultsMaxClients,
      defaults.resultsHeartbeatMs,
      defaults.resultsEventIntervalMs,
    ],
    [undefined, [], 2000, 15_000, 100],
  );
  assert.equal(loadConfig({ RESULTS_EVENT_INTERVAL_MS: "0" }).resultsEventIntervalMs, 0);
  assert.equal(defaults.resultsDatabaseUrl, undefined, "unset: the results connect to DATABASE_URL");
  assert.equal(
    loadConfig({ RESULTS_DATABASE_URL: "postgresql://u:p%25@10.0.0.5/votes" }).resultsDatabaseUrl,
    "postgresql://u:p%25@10.0.0.5/votes",
  );
  const set = loadConfig({
    RESULTS_CORS_ORIGINS: " https://news.example, http://localhost:3000 ",
    RESULTS_HEARTBEAT_SECONDS: "5",
  });
  assert.deepEqual(set.resultsCorsOrigins, ["https://news.example", "http://localhost:3000"]);
  assert.equal(set.resultsHeartbeatMs, 5000);
  assert.deepEqual(loadConfig({ RESULTS_CORS_ORIGINS: "*" }).resultsCorsOrigins, ["*"]);
});

Deno.test("config: .env is read, and the real environment wins over it", async () => {
  const path = await Deno.makeTempFile({ dir: "/tmp", suffix: ".env" });
  try {
    await Deno.writeTextFile(path, "BATCH_SIZE=250\nRABBITMQ_QUEUE='from.file'\n# comment\n");
    const env = await envWithDotenv(path, (name) => name === "RABBITMQ_QUEUE" ? "from.env" : undefined);
    const config = loadConfig(env);
    assert.equal(config.batchSize, 250);
    assert.equal(config.rabbitmqQueue, "from.env");
    const missing = await envWithDotenv("/tmp/does-not-exist.env", () => undefined);
    assert.equal(loadConfig(missing).batchSize, 1000);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("config: every variable has a unique name (the --allow-env list)", () => {
  assert.equal(new Set(VARIABLE_NAMES).size, VARIABLE_NAMES.length);
  assert.ok(VARIABLE_NAMES.includes("BATCH_SIZE"));
});

Deno.test("config: several broker nodes in RABBITMQ_URL or RABBITMQ_HOST; a single value is one node", () => {
  assert.deepEqual(
    loadConfig({ RABBITMQ_URL: "amqp://u:p@mq1:5672/v, amqp://u:p@mq2:5673/v" }).rabbitmqUrls,
    ["amqp://u:p@mq1:5672/v", "amqp://u:p@mq2:5673/v"],
  );
  assert.deepEqual(
    loadConfig({ RABBITMQ_HOST: "mq1,mq2:5673,[::1]:5674,::1", RABBITMQ_PORT: "5680", RABBITMQ_PASSWORD: "s" })
      .rabbitmqUrls,
    [
      "amqp://guest:s@mq1:5680/%2F",
      "amqp://guest:s@mq2:5673/%2F",
      "amqp://guest:s@[::1]:5674/%2F",
      "amqp://guest:s@[::1]:5680/%2F",
    ],
  );
  assert.equal(loadConfig({ RABBITMQ_HOST: "mq" }).rabbitmqUrls.length, 1);
  for (const host of ["mq1,,mq2", "mq1:0", "mq1:x", ","]) {
    assert.equal(configError({ RABBITMQ_HOST: host }).variable, "RABBITMQ_HOST", host);
  }
  const bad = configError({ RABBITMQ_URL: "amqp://u:secret@mq1/, http://u:secret@mq2/" });
  assert.equal(bad.variable, "RABBITMQ_URL");
  assert.doesNotMatch(bad.message, /secret/);
  const empty = configError({ RABBITMQ_URL: "amqp://u:secret@mq1/,," });
  assert.doesNotMatch(empty.message, /secret/);
});
