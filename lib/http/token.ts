/**
 * Bearer tokens: a presented token checked against the configured one in
 * constant time (both hashed with SHA-256 first, so neither the comparison's
 * time nor its length tells anything). Used by the control plane's admin
 * routes (`ADMIN_TOKEN`) and the results routes (`RESULTS_TOKEN`); which
 * route needs which token is theirs to say.
 *
 * @example
 * ```ts
 * import { tokenChecker } from "./token.ts";
 * const check = tokenChecker("a-token-of-16-or-more");
 * await check(bearerToken(request)); // true or false
 * ```
 *
 * @module
 */

import { timingSafeEqual } from "node:crypto";

/** A check of presented tokens against `token`. */
export function tokenChecker(token: string): (presented: string | undefined) => Promise<boolean> {
  const expected = digest(token);
  return async (presented) => {
    if (presented === undefined) return false;
    // Equal lengths by construction (SHA-256), so the comparison time depends on neither token.
    return timingSafeEqual(await digest(presented), await expected);
  };
}

/** The token of an `Authorization: Bearer <token>` header, if any. */
export function bearerToken(request: Request): string | undefined {
  return request.headers.get("authorization")?.match(/^Bearer (.+)$/i)?.[1];
}

async function digest(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)));
}
