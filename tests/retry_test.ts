import assert from "node:assert/strict";
import { AbortedError, backoffDelay, retry, RetryError } from "../lib/retry.ts";

Deno.test("retry: gives up after maxAttempts with the last error as cause", async () => {
  let calls = 0;
  const retried: number[] = [];
  const error = await retry(() => Promise.reject(new Error(`fail ${++calls}`)), {
    maxAttempts: 3,
    minDelayMs: 1,
    onRetry: (_, attempt) => retried.push(attempt),
  }).catch((e) => e);
  assert.ok(error instanceof RetryError);
  assert.equal(error.attempts, 3);
  assert.equal((error.cause as Error).message, "fail 3");
  assert.deepEqual(retried, [1, 2]);
});

Deno.test("retry: an error shouldRetry refuses is thrown at once", async () => {
  let calls = 0;
  await assert.rejects(
    retry(() => Promise.reject(new TypeError(`bad ${++calls}`)), { shouldRetry: (e) => !(e instanceof TypeError) }),
    TypeError,
  );
  assert.equal(calls, 1);
});

Deno.test("retry: resolves on the first success, and aborted stops an endless retry", async () => {
  let calls = 0;
  assert.equal(
    await retry(() => ++calls < 3 ? Promise.reject(new Error("no")) : Promise.resolve(calls), { minDelayMs: 1 }),
    3,
  );
  let stop = false;
  const endless = retry(() => Promise.reject(new Error("down")), {
    maxAttempts: Infinity,
    minDelayMs: 1,
    aborted: () => stop,
    onRetry: (_, attempt) => stop = attempt >= 5,
  });
  await assert.rejects(endless, AbortedError);
});

Deno.test("retry: backoff doubles up to the cap; jitter only shortens", () => {
  assert.deepEqual([1, 2, 3, 4, 10].map((n) => backoffDelay(n, { minDelayMs: 100, maxDelayMs: 500 })), [
    100,
    200,
    400,
    500,
    500,
  ]);
  assert.equal(backoffDelay(1, { minDelayMs: 100, jitter: 0.5 }, () => 0), 50);
  assert.equal(backoffDelay(1, { minDelayMs: 100, jitter: 0.5 }, () => 1), 100);
  assert.throws(() => backoffDelay(1, { jitter: 2 }), /'jitter' must be from 0 to 1: current value is 2/);
});

Deno.test("retry: a wake signal ends the wait under way, and the next attempt starts at once", async () => {
  let wake = new AbortController();
  let calls = 0;
  const started = performance.now();
  const result = retry(() => {
    calls++;
    if (calls < 3) return Promise.reject(new Error("down"));
    return Promise.resolve("up");
  }, {
    maxAttempts: Infinity,
    minDelayMs: 60_000,
    wake: () => wake.signal,
    onRetry: () =>
      queueMicrotask(() => {
        const current = wake;
        wake = new AbortController();
        current.abort();
      }),
  });
  assert.equal(await result, "up");
  assert.equal(calls, 3);
  assert.ok(performance.now() - started < 1000, "no 60 s backoff waited out");
});
