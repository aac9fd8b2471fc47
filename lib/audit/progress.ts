/**
 * Progress of a long pass, on stderr: a bar redrawn in place when stderr is a
 * terminal, otherwise one line every `everyRows` rows (logs stay readable).
 * Nothing when `quiet`. It only reports; it does not time or count anything.
 *
 * @module
 */

/** Reports progress of a pass over `total` rows. */
export interface Progress {
  /** `done` rows of `total` are through. */
  update(done: number, total: number): void;
  /** Ends the bar (a newline on a terminal). */
  end(): void;
}

/** Options of {@link progressOnStderr}. */
export interface ProgressOptions {
  /** Shown before the bar. */
  label: string;
  /** Print nothing. @default false */
  quiet?: boolean;
  /** Without a terminal: one line per this many rows. @default 1000000 */
  everyRows?: number;
  /** Draw a bar (default: whether stderr is a terminal). */
  terminal?: boolean;
}

const WIDTH = 30;

/** A {@link Progress} on stderr. */
export function progressOnStderr(options: ProgressOptions): Progress {
  const encoder = new TextEncoder();
  const write = (text: string) => Deno.stderr.writeSync(encoder.encode(text));
  if (options.quiet) return { update: () => {}, end: () => {} };
  const terminal = options.terminal ?? Deno.stderr.isTerminal();
  const every = options.everyRows ?? 1_000_000;
  let nextLine = every;
  let drawn = false;
  return {
    update(done, total) {
      if (terminal) {
        const share = total > 0 ? Math.min(1, done / total) : 1;
        const full = Math.round(share * WIDTH);
        write(`\r${options.label} [${"#".repeat(full)}${" ".repeat(WIDTH - full)}] ${done}/${total} rows`);
        drawn = true;
      } else if (done >= nextLine || (done === total && done > 0 && nextLine !== Infinity)) {
        write(`${options.label}: ${done}/${total} rows\n`);
        nextLine = done === total ? Infinity : (Math.floor(done / every) + 1) * every;
      }
    },
    end() {
      if (drawn) write("\n");
    },
  };
}
