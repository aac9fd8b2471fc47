import assert from "node:assert/strict";
import { IllegalTransitionError, PipelineState, STATE_NAMES, TRANSITIONS } from "../../lib/pipeline/state.ts";
import { pipelineStateDiagram } from "../../tools/state_diagram.ts";

const connected = () => {
  const state = new PipelineState();
  state.apply("broker_up");
  return state;
};

Deno.test("state: degraded until the broker's first session, then running", () => {
  const state = new PipelineState();
  assert.deepEqual(state.current, {
    name: "degraded",
    database: false,
    databaseUnreachable: false,
    broker: true,
    operatorPaused: false,
  });
  assert.equal(state.pauseReasons.size, 0, "a missing broker is no reason to cancel a consumer that is not there");
  state.apply("broker_up");
  assert.deepEqual(state.current, { name: "running" });
});

Deno.test("state: a database that does not answer its probe is degraded, not a reason to pause", () => {
  const state = connected();
  state.apply("database_unreachable");
  assert.equal(state.current.name, "degraded");
  assert.equal(state.pauseReasons.size, 0, "a commit that fails pauses consumption; the probe only reports");
  state.apply("database_reachable");
  assert.deepEqual(state.current, { name: "running" });
});

Deno.test("state: an operator's pause and a database outage are separate pause reasons", () => {
  const state = connected();
  state.apply("operator_pause");
  assert.deepEqual(state.current, { name: "paused", reason: "operator" });
  state.apply("database_down");
  assert.equal(state.current.name, "degraded");
  assert.deepEqual([...state.pauseReasons].sort(), ["database", "operator"]);
  state.apply("database_up");
  assert.deepEqual(state.current, { name: "paused", reason: "operator" }, "the operator's pause survives recovery");
  state.apply("operator_resume");
  assert.deepEqual(state.current, { name: "running" });
  assert.equal(state.pauseReasons.size, 0);
});

Deno.test("state: draining wins over every other state and refuses operator pauses", () => {
  const state = connected();
  state.apply("database_down");
  state.apply("drain");
  assert.deepEqual(state.current, { name: "draining", abandoned: false });
  assert.ok(state.pauseReasons.has("draining"));
  assert.throws(() => state.apply("operator_pause"), IllegalTransitionError);
  assert.throws(() => state.apply("operator_resume"), /Cannot operator resume while draining/);
  assert.throws(() => state.apply("drain"), IllegalTransitionError);
  state.apply("database_up"); // the drain waits on it
  state.apply("abandon");
  assert.deepEqual(state.current, { name: "draining", abandoned: true });
  assert.ok(state.abandoned);
});

Deno.test("state: abandon is legal only while draining", () => {
  assert.throws(() => connected().apply("abandon"), IllegalTransitionError);
});

Deno.test("state: the transition table names only real states", () => {
  for (const [event, { from }] of Object.entries(TRANSITIONS)) {
    assert.ok(from.length > 0, `${event} is legal somewhere`);
    for (const name of from) assert.ok(STATE_NAMES.includes(name), `${event}: ${name}`);
  }
});

Deno.test("state: docs/architecture.md's diagram is the one tools/state_diagram.ts derives from TRANSITIONS", async () => {
  const page = await Deno.readTextFile(new URL("../../docs/architecture.md", import.meta.url));
  const marker = "<!-- generated: deno run tools/state_diagram.ts -->";
  assert.ok(page.includes(marker), "the page marks the generated diagram");
  const block = page.slice(page.indexOf(marker)).match(/```mermaid\n([\s\S]*?)\n```/);
  assert.ok(block, "a mermaid block follows the marker");
  assert.equal(block[1], pipelineStateDiagram(), "regenerate it with: deno run tools/state_diagram.ts");
});

Deno.test("state: the derived diagram has every state and every event", () => {
  const diagram = pipelineStateDiagram();
  for (const name of STATE_NAMES) assert.ok(diagram.includes(` ${name}`), name);
  for (const event of Object.keys(TRANSITIONS)) {
    if (event !== "abandon") assert.ok(diagram.includes(event), event); // abandon stays in draining
  }
});
