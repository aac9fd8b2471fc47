/**
 * `deno run tools/state_diagram.ts`: prints the pipeline's state machine
 * (lib/pipeline/state.ts) as a Mermaid state diagram, the one that
 * docs/architecture.md shows. It is derived from {@link TRANSITIONS} by
 * applying every legal event in every reachable state, so the picture cannot
 * say what the code does not do; tests/pipeline/state_test.ts fails when the
 * page's copy differs from this output.
 *
 * @module
 */

import { type PipelineEvent, PipelineState, type StateName, TRANSITIONS } from "../lib/pipeline/state.ts";

const EVENTS = Object.keys(TRANSITIONS) as PipelineEvent[];

/** A state machine that has seen `events` from the start. */
function replay(events: readonly PipelineEvent[]): PipelineState {
  const state = new PipelineState();
  for (const event of events) state.apply(event);
  return state;
}

/** Everything the state machine shows of its facts: two replays with the same key behave the same. */
function keyOf(state: PipelineState): string {
  return JSON.stringify([state.current, [...state.pauseReasons].sort(), state.operatorPaused, state.databaseDown]);
}

/** The Mermaid `stateDiagram-v2` of the pipeline: one arrow per pair of states, labelled with the events between them. */
export function pipelineStateDiagram(): string {
  const initial = new PipelineState().current.name;
  const edges = new Map<string, Set<PipelineEvent>>();
  const seen = new Set<string>();
  const queue: PipelineEvent[][] = [[]];
  while (queue.length) {
    const path = queue.shift()!;
    const state = replay(path);
    const key = keyOf(state);
    if (seen.has(key)) continue;
    seen.add(key);
    const from = state.current.name;
    for (const event of EVENTS) {
      if (!TRANSITIONS[event].from.includes(from)) continue;
      const to = replay([...path, event]).current.name;
      if (to !== from) {
        const edge = `${from} --> ${to}`;
        edges.set(edge, (edges.get(edge) ?? new Set()).add(event));
      }
      queue.push([...path, event]);
    }
  }
  const order = (name: StateName) => ["running", "paused", "degraded", "draining"].indexOf(name);
  const lines = [...edges].sort(([a], [b]) => {
    const [fa, ta] = a.split(" --> ") as StateName[];
    const [fb, tb] = b.split(" --> ") as StateName[];
    return order(fa) - order(fb) || order(ta) - order(tb);
  }).map(([edge, events]) => `  ${edge}: ${[...events].sort().join(", ")}`);
  return ["stateDiagram-v2", `  [*] --> ${initial}`, ...lines, "  draining --> [*]"].join("\n");
}

if (import.meta.main) console.log(pipelineStateDiagram());
