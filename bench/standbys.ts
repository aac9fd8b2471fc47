/**
 * `--standbys`: what `POSTGRES_MIN_STANDBYS=1` costs. A private primary with one asynchronously streaming
 * standby (tests/support/postgres_pair.ts, never the machine's own cluster), and on it the drain and the
 * latency phases (`drain.ts`, `latency.ts`, their own figures and checks) with `POSTGRES_MIN_STANDBYS=0`
 * and `=1`: the difference is the wait for the standby to flush each batch's commit before it is
 * acknowledged.
 *
 * @module
 */

import postgres from "postgres";
import { startPostgresPair } from "../tests/support/postgres_pair.ts";
import { type TestDatabase, uniqueName } from "../tests/support/servers.ts";
import type { Options } from "./common.ts";
import { drain } from "./drain.ts";
import { latency } from "./latency.ts";
import type { Row } from "./report.ts";

/** The drain of `options.n` messages and the latency at `options.rate` (last of `--timeouts`), N = 0 then 1. */
export async function standbys(options: Options, signal: AbortSignal): Promise<Row[]> {
  await using pair = await startPostgresPair({ synchronous: false });
  const admin = postgres(pair.primary.urlFor("postgres"), { max: 1, onnotice: () => {} });
  const database = async (): Promise<TestDatabase> => {
    const name = uniqueName("h24_bench");
    await pair.createDatabase(name);
    const sql = postgres(pair.primary.urlFor(name), { max: 2, onnotice: () => {} });
    return {
      name,
      url: pair.primary.urlFor(name),
      sql,
      async [Symbol.asyncDispose]() {
        await sql.end({ timeout: 1 });
        await admin.unsafe(`drop database if exists ${name} with (force)`);
      },
    };
  };
  const rows: Row[] = [];
  try {
    for (const n of [0, 1]) {
      const env = { POSTGRES_MIN_STANDBYS: String(n) };
      const label = `, a standby, POSTGRES_MIN_STANDBYS=${n}`;
      rows.push(await drain(options, options.n, `drain${label}`, signal, { database, env }));
      rows.push(await latency(options, options.timeouts.at(-1)!, signal, { database, env, label }));
    }
  } finally {
    await admin.end({ timeout: 1 });
  }
  return rows;
}
