/**
 * A fresh machine: the configured database does not exist. The service creates it and serves, or,
 * when its role may not, stops with the one `createdb` command to run.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { ensureDatabase } from "../../lib/database/pool.ts";
import { createTestQueue, POSTGRES_URL, RABBITMQ_URL, uniqueName } from "../support/servers.ts";
import { spawnService } from "../support/service.ts";

Deno.test("fresh machine: the service creates its missing database, migrates it and answers /readyz 200", async () => {
  const name = uniqueName("va_fresh");
  const server = new URL(POSTGRES_URL);
  const admin = postgres(POSTGRES_URL, { max: 1, onnotice: () => {} });
  await using queue = await createTestQueue();
  try {
    await using service = await spawnService({
      POSTGRES_HOST: server.hostname,
      POSTGRES_PORT: server.port || "5432",
      POSTGRES_USER: decodeURIComponent(server.username) || "postgres",
      POSTGRES_PASSWORD: decodeURIComponent(server.password),
      POSTGRES_DB: name,
      POSTGRES_SSLMODE: "disable",
      RABBITMQ_URL,
      RABBITMQ_QUEUE: queue.name,
    });
    let status = 0;
    for (let i = 0; i < 200 && status !== 200; i++) {
      const response = await fetch(`${service.url}/readyz`);
      status = response.status;
      await response.body?.cancel();
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(status, 200, service.output());
    assert.match(service.output(), new RegExp(`Created database ${name}`));
    const [{ n }] = await admin`select count(*)::int as n from pg_database where datname = ${name}`;
    assert.equal(n, 1);
    assert.equal(await service.stop(), 0);
  } finally {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
});

Deno.test("fresh machine: a role that may not create the database gets the createdb command to run", async () => {
  const name = uniqueName("va_fresh");
  const role = uniqueName("va_nocreate");
  const admin = postgres(POSTGRES_URL, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create role ${role} login nocreatedb`);
    const url = new URL(POSTGRES_URL);
    url.username = role;
    url.pathname = `/${name}`;
    await assert.rejects(
      ensureDatabase({ databaseUrl: url.toString(), postgresSslMode: "disable", postgresSslRootCert: undefined }),
      (error: Error) => {
        assert.match(
          error.message,
          new RegExp(`^Database "${name}" does not exist and cannot be created as role "${role}"`),
        );
        assert.match(error.message, new RegExp(`run \`createdb -h ${url.hostname} -p \\d+ -O ${role} ${name}\``));
        assert.equal(error.message.split("\n").length, 1, "one line");
        return true;
      },
    );
    assert.equal(
      await ensureDatabase({ databaseUrl: POSTGRES_URL, postgresSslMode: "disable", postgresSslRootCert: undefined }),
      false,
      "an existing database is left alone",
    );
  } finally {
    await admin.unsafe(`drop role if exists ${role}`);
    await admin.end();
  }
});
