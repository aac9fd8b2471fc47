/**
 * The service's version: `version` in `deno.json`, the one place it is set.
 * `vote-aggregator --version`, `/status` and the `vote_aggregator_build_info`
 * gauge report it; CHANGELOG.md says what each version changed. Imported as a
 * JSON module, so a `deno compile` binary carries it and no file is read.
 *
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };

/** The version of this build, e.g. `1.0.0`. */
export const VERSION: string = denoJson.version;
