import assert from "node:assert/strict";
import { readinessOf } from "../../lib/pipeline/readiness.ts";
import { PipelineState } from "../../lib/pipeline/state.ts";

const consuming = { connected: true, consuming: true };
const stopped = { connected: true, consuming: false };
const gone = { connected: false, consuming: false };

function after(...events: Parameters<PipelineState["apply"]>[0][]) {
  const state = new PipelineState();
  for (const event of ["broker_up" as const, ...events]) state.apply(event);
  return state.current;
}

Deno.test("readiness: each state, and the part it names", () => {
  const cases = [
    { state: after(), broker: consuming, ready: true, reason: null },
    // Running but the channel delivers nothing (between a session opening and consume): not ready.
    { state: after(), broker: stopped, ready: false, reason: /^broker: connected, not consuming/ },
    { state: after("operator_pause"), broker: stopped, ready: true, reason: null },
    { state: after("database_down"), broker: stopped, ready: false, reason: /^database: / },
    { state: after("operator_pause", "database_down"), broker: stopped, ready: false, reason: /^database: / },
    { state: after("broker_down"), broker: gone, ready: false, reason: /^broker: down/ },
    // The state's fact counts even if the session's flag has not caught up yet.
    { state: after("broker_down"), broker: consuming, ready: false, reason: /^broker: down/ },
    { state: after("drain"), broker: stopped, ready: false, reason: /^draining: / },
    { state: after("database_down", "drain"), broker: stopped, ready: false, reason: /^draining: / },
    { state: after("drain", "abandon"), broker: stopped, ready: false, reason: /deadline passed/ },
  ];
  for (const { state, broker, ready, reason } of cases) {
    const r = readinessOf(state, broker);
    const what = `${JSON.stringify(state)} with ${JSON.stringify(broker)}`;
    assert.equal(r.ready, ready, what);
    if (reason === null) assert.equal(r.reason, null, what);
    else assert.match(r.reason ?? "", reason, what);
    assert.equal(r.state, state.name);
  }
  assert.match(readinessOf(after("database_down"), stopped).database, /^down: /);
  assert.equal(readinessOf(after("database_down"), stopped).broker, "up");
});

Deno.test("readiness: why the database is down, and a commit waiting for standbys, are said", () => {
  const readOnly = "the server is read-only (a standby, or a demoted primary): waiting for one that takes writes";
  const down = readinessOf(after("database_down"), stopped, { down: readOnly });
  assert.equal(down.ready, false);
  assert.equal(down.reason, `database: ${readOnly}; retrying with backoff`);
  assert.equal(down.database, `down: ${readOnly}; retrying with backoff`);

  const waiting = "a commit has waited 2.0 s for 1 standby(s) to flush it (POSTGRES_MIN_STANDBYS)";
  const held = readinessOf(after(), consuming, { waiting });
  assert.deepEqual([held.ready, held.reason, held.database], [false, `database: ${waiting}`, `waiting: ${waiting}`]);
  // The same commit failed before it waited (its first server went away): the wait is what holds it now.
  assert.equal(
    readinessOf(after("database_down"), stopped, { down: readOnly, waiting }).reason,
    `database: ${waiting}`,
  );
  // Draining says so first.
  assert.match(readinessOf(after("drain"), stopped, { waiting }).reason ?? "", /^draining: /);
  assert.equal(readinessOf(after(), consuming, {}).ready, true);
});
