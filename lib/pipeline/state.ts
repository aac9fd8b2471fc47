/**
 * The pipeline's state: one explicit state machine, the single source of what
 * `/status`, `/readyz`, `aggregator_state` and the consumer's pause report.
 *
 * Facts come in as events; the state is derived from the facts, by priority:
 *
 * | state | when |
 * | --- | --- |
 * | `draining` | a graceful stop began (`drain`); `abandoned` once its deadline passed |
 * | `degraded` | a batch cannot be committed (`database_down`), the database does not answer its probe (`database_unreachable`), or the broker is unreachable (`broker_down`) |
 * | `paused` | an operator paused consumption (`operator_pause`) |
 * | `running` | none of the above |
 *
 * Consumption runs only while no {@link PauseReason} holds. A database that does not answer its probe
 * (`../database/probe.ts`) is reported, not a reason to pause: a commit that fails is (`database_down`). {@link TRANSITIONS}
 * lists, for each event, the states it is legal in; any other is refused with an
 * {@link IllegalTransitionError} (e.g. an operator's pause during a drain).
 *
 * It does not own what any state does (`aggregator.ts`, `outage.ts`).
 *
 * @example
 * ```ts
 * import { PipelineState } from "./state.ts";
 * const state = new PipelineState();
 * state.apply("operator_pause");
 * state.current.name; // "paused"
 * state.pauseReasons; // Set { "operator" }
 * ```
 *
 * @module
 */

/** Names of the states, as `aggregator_state{state}` reports them. */
export const STATE_NAMES = ["running", "paused", "degraded", "draining"] as const;

/** Why consumption is stopped. */
export type PauseReason = "operator" | "database" | "draining";

/** The state, with what each one needs to be understood. */
export type State =
  | { name: "running" }
  | { name: "paused"; reason: "operator" }
  | { name: "degraded"; database: boolean; databaseUnreachable: boolean; broker: boolean; operatorPaused: boolean }
  | { name: "draining"; abandoned: boolean };

/** A state's name. */
export type StateName = State["name"];

/** What can happen to the pipeline. */
export type PipelineEvent =
  | "operator_pause"
  | "operator_resume"
  | "database_down"
  | "database_up"
  | "database_unreachable"
  | "database_reachable"
  | "broker_down"
  | "broker_up"
  | "drain"
  | "abandon";

/** What the state is derived from. */
interface Facts {
  operatorPaused: boolean;
  databaseDown: boolean;
  databaseUnreachable: boolean;
  brokerDown: boolean;
  draining: boolean;
  abandoned: boolean;
}

const LIVE: readonly StateName[] = ["running", "paused", "degraded"];
const ANY: readonly StateName[] = STATE_NAMES;

/** Each event: the states it may happen in, and the fact it changes. */
export const TRANSITIONS: Readonly<
  Record<PipelineEvent, { from: readonly StateName[]; set: Partial<Facts> }>
> = {
  operator_pause: { from: LIVE, set: { operatorPaused: true } },
  operator_resume: { from: LIVE, set: { operatorPaused: false } },
  // Database and broker keep failing and recovering during a drain too: the drain waits on them.
  database_down: { from: ANY, set: { databaseDown: true } },
  database_up: { from: ANY, set: { databaseDown: false } },
  database_unreachable: { from: ANY, set: { databaseUnreachable: true } },
  database_reachable: { from: ANY, set: { databaseUnreachable: false } },
  broker_down: { from: ANY, set: { brokerDown: true } },
  broker_up: { from: ANY, set: { brokerDown: false } },
  drain: { from: LIVE, set: { draining: true } },
  abandon: { from: ["draining"], set: { abandoned: true } },
};

/** An event that is not legal in the current state. */
export class IllegalTransitionError extends Error {
  readonly event: PipelineEvent;
  readonly state: StateName;
  constructor(event: PipelineEvent, state: StateName) {
    super(`Cannot ${event.replace("_", " ")} while ${state}`);
    this.name = "IllegalTransitionError";
    this.event = event;
    this.state = state;
  }
}

/** The state machine; see the module documentation. */
export class PipelineState {
  #facts: Facts = {
    operatorPaused: false,
    databaseDown: false,
    databaseUnreachable: false,
    // Until the first session opens, the broker is not there.
    brokerDown: true,
    draining: false,
    abandoned: false,
  };

  /** The current state. */
  get current(): State {
    const f = this.#facts;
    if (f.draining) return { name: "draining", abandoned: f.abandoned };
    if (f.databaseDown || f.databaseUnreachable || f.brokerDown) {
      return {
        name: "degraded",
        database: f.databaseDown,
        databaseUnreachable: f.databaseUnreachable,
        broker: f.brokerDown,
        operatorPaused: f.operatorPaused,
      };
    }
    if (f.operatorPaused) return { name: "paused", reason: "operator" };
    return { name: "running" };
  }

  /** Why consumption is stopped now; empty while it runs. */
  get pauseReasons(): ReadonlySet<PauseReason> {
    const f = this.#facts;
    const reasons = new Set<PauseReason>();
    if (f.operatorPaused) reasons.add("operator");
    if (f.databaseDown) reasons.add("database");
    if (f.draining) reasons.add("draining");
    return reasons;
  }

  /** True while an operator's pause holds (whatever else holds too). */
  get operatorPaused(): boolean {
    return this.#facts.operatorPaused;
  }

  /** True while a batch cannot be committed. */
  get databaseDown(): boolean {
    return this.#facts.databaseDown;
  }

  /** True once a drain outlived its deadline: work still retrying gives up. */
  get abandoned(): boolean {
    return this.#facts.abandoned;
  }

  /**
   * Applies `event`.
   *
   * @throws {IllegalTransitionError} when `event` is not legal in the current state
   */
  apply(event: PipelineEvent): void {
    const state = this.current.name;
    const transition = TRANSITIONS[event];
    if (!transition.from.includes(state)) throw new IllegalTransitionError(event, state);
    this.#facts = { ...this.#facts, ...transition.set };
  }
}
