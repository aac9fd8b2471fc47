import assert from "node:assert/strict";
import { delay, TimeoutError, withTimeout } from "../lib/timeout.ts";

Deno.test("withTimeout: the promise's value when it settles in time", async () => {
  assert.equal(await withTimeout(Promise.resolve(7), 1000, "late"), 7);
  await assert.rejects(withTimeout(Promise.reject(new RangeError("own")), 1000, "late"), RangeError);
});

Deno.test("withTimeout: a TimeoutError with the message when it does not", async () => {
  const never = new Promise<never>(() => {});
  const started = performance.now();
  await assert.rejects(withTimeout(never, 30, "no answer in 30 ms"), (error: unknown) => {
    assert.ok(error instanceof TimeoutError);
    assert.equal(error.message, "no answer in 30 ms");
    return true;
  });
  assert.ok(performance.now() - started >= 29);
  await delay(1);
});
