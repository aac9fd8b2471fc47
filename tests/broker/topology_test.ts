import assert from "node:assert/strict";
import { REJECT_REASON_HEADER } from "../../lib/broker/dead_letter.ts";
import { startService } from "../../lib/service.ts";
import { createTestDatabase, createTestQueue, results } from "../support/servers.ts";
import { testConfig } from "../support/service.ts";
import { seedVote, workerVote } from "../support/votes.ts";
import { waitForEvent } from "../support/wait.ts";

/** The seed aggregator's declaration, and the seed publisher's. */
const SEED_ARGUMENTS: Record<string, Record<string, unknown>> = {
  "the seed aggregator's x-message-ttl and x-max-length": { "x-message-ttl": 86_400_000, "x-max-length": 1_000_000 },
  "the seed publisher's x-max-priority": { "x-max-priority": 10 },
};

for (const [label, args] of Object.entries(SEED_ARGUMENTS)) {
  Deno.test(`topology: a queue pre-declared with ${label} is adopted as it is and consumed exactly`, async () => {
    await using db = await createTestDatabase();
    await using queue = await createTestQueue({ declare: false });
    await queue.channel.assertQueue(queue.name, { durable: true, arguments: args });
    const bodies = [
      ...Array.from({ length: 30 }, (_, i) => seedVote(i, "L-SEEDQ", i % 3 ? "oui" : "non")),
      ...Array.from({ length: 20 }, (_, i) => workerVote(100 + i, "L-SEEDQ", "NON")),
      "not json",
      seedVote(0, "L-SEEDQ", "oui"), // a redelivery of the first
    ];
    await queue.publish(bodies);
    const service = await startService(testConfig(db, queue));
    try {
      await waitForEvent(service.aggregator, "acked", () => service.aggregator.totals.messages === bodies.length);
      assert.deepEqual(await results(db.sql), { "L-SEEDQ": [20, 30] });
      assert.equal(service.broker.consuming, true);
    } finally {
      await service.stop();
    }
    const dead = await queue.takeDeadLetters();
    assert.equal(dead.length, 1, "the service's own dead-letter queue still gets the malformed message");
    assert.equal(dead[0].properties.headers?.[REJECT_REASON_HEADER], "invalid_json");
    assert.equal(await queue.count(), 0, "nothing left in the queue");
    const info = await queue.info();
    for (const [key, value] of Object.entries(args)) assert.equal(info.arguments[key], value, `${key} kept`);
  });
}
