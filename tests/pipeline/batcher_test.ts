import assert from "node:assert/strict";
import { Batcher } from "../../lib/pipeline/batcher.ts";

Deno.test("Batcher: closes at the size, in order", () => {
  const batches: number[][] = [];
  const batcher = new Batcher<number>({ size: 3, timeoutMs: 60_000, onBatch: (b) => batches.push(b) });
  for (let i = 0; i < 7; i++) batcher.add(i);
  assert.deepEqual(batches, [[0, 1, 2], [3, 4, 5]]);
  assert.equal(batcher.length, 1);
  assert.equal(batcher.close(), 1);
  assert.deepEqual(batches.at(-1), [6]);
  assert.equal(batcher.close(), 0, "closing an empty batch hands nothing on");
  assert.equal(batches.length, 3);
});

Deno.test("Batcher: a single item closes on time, measured from the first item", async () => {
  const closed = Promise.withResolvers<{ items: string[]; at: number }>();
  const batcher = new Batcher<string>({
    size: 100,
    timeoutMs: 80,
    onBatch: (items) => closed.resolve({ items, at: performance.now() }),
  });
  const start = performance.now();
  batcher.add("only");
  assert.ok(batcher.openedAt >= start);
  const { items, at } = await closed.promise;
  assert.deepEqual(items, ["only"]);
  assert.ok(at - start >= 79, `closed after ${at - start} ms`);
  assert.ok(at - start < 1000, `closed after ${at - start} ms`);
  assert.equal(batcher.length, 0);
  assert.equal(batcher.openedAt, 0);
});

Deno.test("Batcher: a size close cancels the timer", async () => {
  const batches: number[][] = [];
  const batcher = new Batcher<number>({ size: 2, timeoutMs: 20, onBatch: (b) => batches.push(b) });
  batcher.add(1);
  batcher.add(2);
  // Wait past the timeout on an event: a fresh batch's own timeout.
  const next = Promise.withResolvers<void>();
  const probe = new Batcher<number>({ size: 10, timeoutMs: 40, onBatch: () => next.resolve() });
  probe.add(0);
  await next.promise;
  assert.deepEqual(batches, [[1, 2]]);
});

Deno.test("Batcher: refuses a size that is not a positive integer", () => {
  assert.throws(() => new Batcher({ size: 0, timeoutMs: 1, onBatch: () => {} }), /'size' must be a positive integer/);
});
