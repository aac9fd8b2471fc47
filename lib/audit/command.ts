/**
 * The `verify` command line, shared by `deno task verify` (tools/verify.ts) and
 * the binary's `vote-aggregator verify`: flags, the database from the service's
 * own configuration, progress on stderr, the report on stdout, and the exit
 * code. It owns no check ({@link ./verify.ts}).
 *
 * Exit codes: 0 everything agrees, 1 a difference was found, 2 bad flags or
 * configuration, 3 the database could not be verified (unreachable, no ledger).
 *
 * @module
 */

import { loadToolConfigOrExit, orExit, parseFlags, UsageError } from "../config/cli.ts";
import { connectDatabase } from "../database/pool.ts";
import { progressOnStderr } from "./progress.ts";
import { digestLine, formatReport, reportJson } from "./report.ts";
import { type ExpectedDigest, parseExpectedDigest, verify } from "./verify.ts";

/** Exit code when verification could not run. */
export const EXIT_CANNOT_VERIFY = 3;

export const VERIFY_USAGE = `Usage: verify [--json] [--digest] [--expect DIGEST[@SEQ]]... [--quiet]

  Recounts every law from the audit trail, compares with vote_results, and replays the batch ledger.
  Exit 0 when all agrees, 1 on any difference (each located: batch, law), 2 bad flags, 3 cannot verify.

      --json            the report as one JSON document on stdout
      --digest          print only the head digest ("SEQ DIGEST TIME") to publish, after verifying
      --expect D[@SEQ]  a digest published earlier must be in the chain (at batch SEQ); repeatable
      --quiet           no progress on stderr
  -h, --help`;

/** Runs `verify` with `args`; resolves with the exit code. */
export async function verifyCommand(args: string[], program = "verify"): Promise<number> {
  const flags = await orExit(program, () => {
    const values = parseFlags(args, {
      json: { type: "boolean", default: false },
      digest: { type: "boolean", default: false },
      expect: { type: "string", multiple: true, default: [] },
      quiet: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    });
    const expect: ExpectedDigest[] = [];
    for (const text of values.expect as string[]) {
      const parsed = parseExpectedDigest(text);
      if (!parsed) throw new UsageError(`--expect takes a 64-hex digest, optionally @SEQ: got ${JSON.stringify(text)}`);
      expect.push(parsed);
    }
    return { ...values, expect };
  }, { hint: `\n${VERIFY_USAGE.split("\n")[0]}` });
  if (flags.help) {
    console.log(VERIFY_USAGE);
    return 0;
  }
  const config = await loadToolConfigOrExit(program, ["PostgreSQL"]);
  const sql = connectDatabase({ ...config, postgresMaxConnections: 1 });
  const progress = progressOnStderr({ label: `${program}: replaying the ledger`, quiet: flags.quiet });
  try {
    const report = await verify(sql, { expect: flags.expect, onProgress: progress.update });
    progress.end();
    if (flags.json) console.log(reportJson(report));
    else if (flags.digest) {
      if (report.ok) console.log(digestLine(report));
      else console.error(`${program}: not printing a digest: the database does not verify\n${formatReport(report)}`);
    } else console.log(formatReport(report));
    return report.ok ? 0 : 1;
  } catch (error) {
    progress.end();
    console.error(`${program}: cannot verify: ${(error as Error).message}`);
    return EXIT_CANNOT_VERIFY;
  } finally {
    await sql.end({ timeout: 5 });
  }
}
