/**
 * `deno task dead-letters <summary|show|replay|purge>`: the dead-letter queue
 * without hand-written scripts (see lib/dead_letters/command.ts).
 *
 * @module
 */

import { deadLettersCommand } from "../lib/dead_letters/command.ts";

if (import.meta.main) Deno.exit(await deadLettersCommand(Deno.args));
