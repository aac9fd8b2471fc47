/**
 * `deno task verify`: recount the votes from the audit trail and replay the
 * batch ledger (see lib/audit/command.ts for flags and exit codes).
 *
 * @module
 */

import { verifyCommand } from "../lib/audit/command.ts";

if (import.meta.main) Deno.exit(await verifyCommand(Deno.args));
