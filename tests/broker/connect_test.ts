import assert from "node:assert/strict";
import amqp from "amqplib";
import { Buffer } from "node:buffer";
import { brokerSocketOptions } from "../../lib/broker/connect.ts";
import { startService } from "../../lib/service.ts";
import {
  createTestDatabase,
  createTestQueue,
  RABBITMQ_URL,
  rabbitmqctl,
  results,
  uniqueName,
} from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { seedVote } from "../support/votes.ts";
import { waitForEvent } from "../support/wait.ts";

/** A broker user of its own with `password` and every permission on vhost /, deleted at dispose. */
async function createBrokerUser(name: string, password: string): Promise<AsyncDisposable> {
  await rabbitmqctl("add_user", name, password);
  await rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*");
  return { [Symbol.asyncDispose]: () => rabbitmqctl("delete_user", name).then(() => {}) };
}

Deno.test("connect: a non-ASCII RABBITMQ_USER and RABBITMQ_PASSWORD, as RabbitMQ accepts them, work for the service and the publisher", async () => {
  const user = `${uniqueName("h12_user")}_ünï`;
  const password = "pässwörd-日本-🔑 %41:@/";
  await using _user = await createBrokerUser(user, password);
  const { hostname, port } = new URL(RABBITMQ_URL);
  const parts = {
    RABBITMQ_URL: "",
    RABBITMQ_HOST: hostname,
    RABBITMQ_PORT: port || "5672",
    RABBITMQ_USER: user,
    RABBITMQ_PASSWORD: password,
  };

  await using db = await createTestDatabase();
  await using queue = await createTestQueue();
  const config = testConfig(db, queue, parts);
  assert.ok(config.rabbitmqUrl.includes("%C3%A4"), "the configuration percent-encodes UTF-8");

  // What tools/publish.ts does: its socket options carry the decoded credentials.
  const publisher = await amqp.connect(config.rabbitmqUrl, brokerSocketOptions(config.rabbitmqUrl, undefined, 5000));
  const channel = await publisher.createConfirmChannel();
  channel.sendToQueue(queue.name, Buffer.from(seedVote(1, "L-UTF8", "oui")), { persistent: true });
  await channel.waitForConfirms();
  await publisher.close();

  const service = await startService(config);
  try {
    await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === 1);
    assert.deepEqual(await results(db.sql), { "L-UTF8": [1, 0] });
  } finally {
    await service.stop();
  }
});
