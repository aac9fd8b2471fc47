/**
 * Configuration values: how one variable's text is read and judged (an
 * integer in a range, seconds, one of a set, a boolean, a URL of given
 * schemes, a name, a list of web origins), an unset or blank one taking its default from the
 * variable table; a value that breaks its rule is a {@link ConfigError}
 * naming the variable. Which variable gets which rule is `config.ts`'s.
 *
 * @module
 */

import { parseDatabaseUrl, parseOrigins, redactUrl, redactUrls, undecodablePart } from "./url.ts";
import { type Variable, type VariableName, VARIABLES } from "./variables.ts";

/** A configuration value that breaks its rule; the message names the variable. */
export class ConfigError extends Error {
  /** The environment variable at fault. */
  readonly variable: string;
  constructor(variable: string, rule: string, value: string) {
    super(
      `Invalid ${variable}: ${rule}, current value is ${JSON.stringify(value)}`,
    );
    this.name = "ConfigError";
    this.variable = variable;
  }
}

/** The `target_session_attrs` a PostgreSQL URL may give: those a server that takes writes satisfies. */
export const TARGET_SESSION_ATTRS: readonly string[] = ["read-write", "primary", "any"];

/** Reads one environment variable; `undefined` when unset. */
export type EnvReader = (name: string) => string | undefined;

/** The readers of {@link valueReaders}, each taking a variable's name. */
export type ValueReaders = ReturnType<typeof valueReaders>;

/** Readers of the variables in `read`, each applying its rule (see the module documentation). */
export function valueReaders(read: EnvReader) {
  const raw = (name: VariableName): string | undefined => {
    const value = read(name);
    return value === undefined || value.trim() === "" ? (VARIABLES[name] as Variable).default : value.trim();
  };
  const text = (name: VariableName): string => raw(name) ?? "";
  const optional = (name: VariableName) => raw(name);

  const integer = (name: VariableName, min: number, max: number): number => {
    const value = text(name);
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) {
      throw new ConfigError(name, `must be an integer from ${min} to ${max}`, value);
    }
    return n;
  };
  const seconds = (name: VariableName, min: number, max: number): number => {
    const value = text(name);
    const n = Number(value);
    if (!/^\d+(\.\d+)?$/.test(value) || n < min || n > max) {
      throw new ConfigError(
        name,
        `must be a number of seconds from ${min} to ${max}`,
        value,
      );
    }
    return Math.round(n * 1000);
  };
  const oneOf = <T extends string>(
    name: VariableName,
    allowed: readonly T[],
    normalize: (s: string) => string = (s) => s.toLowerCase(),
  ): T => {
    const value = text(name);
    const n = normalize(value) as T;
    if (!allowed.includes(n)) {
      throw new ConfigError(name, `must be one of ${allowed.join(", ")}`, value);
    }
    return n;
  };
  const boolean = (name: VariableName): boolean =>
    ["true", "1", "yes", "on"].includes(
      oneOf(name, ["true", "false", "1", "0", "yes", "no", "on", "off"]),
    );
  const url = (name: VariableName, schemes: string[], given?: string): string | undefined => {
    const value = given ?? optional(name);
    if (value === undefined) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      throw new ConfigError(name, `must be a URL (${schemes.join(" or ")})`, redactUrl(value));
    }
    if (!schemes.includes(parsed.protocol.slice(0, -1))) {
      throw new ConfigError(
        name,
        `must start with ${schemes.map((s) => s + "://").join(" or ")}`,
        redactUrl(value),
      );
    }
    const part = undecodablePart(parsed);
    if (part !== undefined) {
      const rule = `its ${part} holds a % that is not percent-encoding: percent-encode it (% as %25)`;
      throw new ConfigError(name, rule, redactUrl(value));
    }
    return value;
  };
  // A comma-separated list of URLs (a cluster's nodes), each checked as `url` checks one.
  const urls = (name: VariableName, schemes: string[]): string[] | undefined => {
    const value = optional(name);
    if (value === undefined) return undefined;
    const list = value.split(",").map((item) => item.trim());
    if (list.some((item) => item === "")) {
      throw new ConfigError(name, "must be one URL or several separated by commas, none empty", redactUrls(value));
    }
    return list.map((item) => url(name, schemes, item) as string);
  };
  // A PostgreSQL URL, with one host or several (libpq's `h1:p1,h2:p2`), and a `target_session_attrs` a writer can use.
  const databaseUrl = (name: VariableName): string | undefined => {
    const value = optional(name);
    if (value === undefined) return undefined;
    const address = parseDatabaseUrl(value);
    if (address === undefined) {
      const rule = "must be a URL (postgres or postgresql), several hosts written host:port,host:port, none empty";
      throw new ConfigError(name, rule, redactUrl(value));
    }
    url(name, ["postgres", "postgresql"], address.url.toString());
    const attrs = address.url.searchParams.get("target_session_attrs");
    if (attrs !== null && !TARGET_SESSION_ATTRS.includes(attrs)) {
      const rule = `its target_session_attrs must be one of ${TARGET_SESSION_ATTRS.join(", ")} (the service writes)`;
      throw new ConfigError(name, rule, redactUrl(value));
    }
    return value;
  };
  const name = (variable: VariableName, max: number): string => {
    const value = text(variable);
    if (value.length === 0 || value.length > max) {
      throw new ConfigError(variable, `must be 1 to ${max} characters`, value);
    }
    return value;
  };
  const origins = (variable: VariableName): string[] => {
    const list = parseOrigins(optional(variable) ?? "");
    if (list === undefined) {
      throw new ConfigError(
        variable,
        "must be * or origins like https://results.example.org, comma-separated",
        text(variable),
      );
    }
    return list;
  };
  return { raw, text, optional, integer, seconds, oneOf, boolean, url, urls, databaseUrl, name, origins };
}
