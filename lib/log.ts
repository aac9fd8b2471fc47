/**
 * Logging: LogTape, configured once from `LOG_LEVEL` and `LOG_FORMAT`.
 * Text lines for people, JSON lines (`LOG_FORMAT=json`) for log shippers.
 *
 * @example
 * ```ts
 * import { getLogger, setupLogging } from "./log.ts";
 * await setupLogging("INFO", "json");
 * getLogger("writer").info("Committed {count} votes", { count: 100 });
 * ```
 *
 * @module
 */

import {
  configure,
  getConsoleSink,
  getJsonLinesFormatter,
  getLogger as getLogTapeLogger,
  getTextFormatter,
  type Logger,
  type LogLevel as LogTapeLevel,
} from "@logtape/logtape";
import type { LogFormat, LogLevel } from "./config/config.ts";

export type { Logger };

const LEVELS: Record<LogLevel, LogTapeLevel> = {
  DEBUG: "debug",
  INFO: "info",
  WARNING: "warning",
  ERROR: "error",
};

/** Configures every logger of the service; call once at start (again only with `reset`). */
export async function setupLogging(
  level: LogLevel,
  format: LogFormat,
  reset = false,
): Promise<void> {
  await configure({
    reset,
    sinks: {
      console: getConsoleSink({
        formatter: format === "json"
          ? getJsonLinesFormatter()
          : getTextFormatter({ timestamp: "date-time-timezone", value: formatValue }),
      }),
    },
    loggers: [
      { category: "vote-aggregator", lowestLevel: LEVELS[level], sinks: ["console"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}

// Strings as they are (no quotes); everything else as Deno.inspect shows it, on one line.
function formatValue(value: unknown): string {
  return typeof value === "string" ? value : Deno.inspect(value, { compact: true, breakLength: Infinity });
}

/** The logger of one part of the service, e.g. `getLogger("broker")`. */
export function getLogger(part: string): Logger {
  return getLogTapeLogger(["vote-aggregator", part]);
}
