/**
 * The seed system in tests: its schemas (the project's fixtures, and the real files when
 * `../shared/seed-system/` sits beside the repository, as on CI), the SQL of its other services, and
 * a role like the one its schema grants to.
 *
 * @module
 */

import postgres from "postgres";
import { SEED_STATEMENTS, type SeedStatement } from "../fixtures/seed_statements.ts";
import { POSTGRES_URL, uniqueName } from "./servers.ts";

/** The seed system's reference files: beside the repository's folder on CI. */
export const SEED_SYSTEM = new URL("../../../shared/seed-system/", import.meta.url);

/** Which schema a database starts from. */
export type SchemaKind = "system" | "aggregation";

/** A schema to load: its kind, where it comes from, and its text. */
export interface SeedSchema {
  kind: SchemaKind;
  label: string;
  sql: string;
}

let absentLogged = false;

/** The text of a real seed file, or undefined (with one console line the first time) when they are absent. */
export async function realSeedFile(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(new URL(path, SEED_SYSTEM));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    if (!absentLogged) {
      console.log(`SKIP the real seed files: ${SEED_SYSTEM.pathname} is absent; the fixtures are tested alone`);
      absentLogged = true;
    }
    return undefined;
  }
}

/** The fixtures, then the real files when present. */
export async function seedSchemas(): Promise<SeedSchema[]> {
  const fixture = (name: string) => Deno.readTextFile(new URL(`../fixtures/${name}`, import.meta.url));
  const schemas: SeedSchema[] = [
    { kind: "system", label: "fixture of data/init_db.sql", sql: await fixture("seed_system_schema.sql") },
    {
      kind: "aggregation",
      label: "fixture of services/aggregation/init_db.sql",
      sql: await fixture("seed_aggregation_schema.sql"),
    },
  ];
  const system = await realSeedFile("data/init_db.sql");
  if (system) schemas.push({ kind: "system", label: "seed-system/data/init_db.sql", sql: system });
  const aggregation = await realSeedFile("services/aggregation/init_db.sql");
  if (aggregation) {
    schemas.push({ kind: "aggregation", label: "seed-system/services/aggregation/init_db.sql", sql: aggregation });
  }
  return schemas;
}

/** A login role of its own (the seed's `voting_user`), dropped at dispose (after the databases using it). */
export interface TestRole extends AsyncDisposable {
  name: string;
}

export async function createTestRole(): Promise<TestRole> {
  const name = uniqueName("va_seed_role");
  const admin = postgres(POSTGRES_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create role ${name} login`);
  return {
    name,
    async [Symbol.asyncDispose]() {
      await admin.unsafe(`drop role if exists ${name}`).catch(() => {});
      await admin.end();
    },
  };
}

/** Loads a seed schema, its grants going to `role` instead of the seed's `voting_user`. */
export async function loadSchema(sql: postgres.Sql, schema: SeedSchema, role: string): Promise<void> {
  await sql.unsafe(schema.sql.replaceAll("voting_user", role));
}

/** The `CREATE [OR REPLACE] VIEW name AS select …;` of a schema: name and query. */
export function viewsOf(schemaSql: string): { name: string; query: string }[] {
  const views: { name: string; query: string }[] = [];
  const text = schemaSql.replace(/--.*$/gm, "");
  for (const match of text.matchAll(/CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(\w+)\s+AS\s+([\s\S]*?);/gi)) {
    views.push({ name: match[1], query: match[2] });
  }
  return views;
}

/** Statements of the seed's services: the fixture, then those of the real `database.py` files when present. */
export async function seedStatements(): Promise<{ label: string; statements: SeedStatement[] }[]> {
  const sets = [{ label: "fixture", statements: [...SEED_STATEMENTS] }];
  const real: SeedStatement[] = [];
  for (const service of ["aggregation", "validation_worker", "ingestion_api"]) {
    const text = await realSeedFile(`services/${service}/database.py`);
    if (text !== undefined) real.push(...extractStatements(text, `${service}/database.py`));
  }
  if (real.length) sets.push({ label: "seed-system/services/*/database.py", statements: real });
  return sets;
}

/** The SELECT and INSERT strings of a Python file, `%s` placeholders numbered as `$n`. */
export function extractStatements(python: string, source: string): SeedStatement[] {
  const statements: SeedStatement[] = [];
  for (const match of python.matchAll(/"""([\s\S]*?)"""|"((?:SELECT|INSERT)[^"\n]*)"/g)) {
    const text = (match[1] ?? match[2]).trim();
    if (!/^(SELECT|INSERT)\s/.test(text) || /^SELECT 1$/i.test(text)) continue;
    let n = 0;
    statements.push({ source, sql: text.replace(/%s/g, () => `$${++n}`) });
  }
  return statements;
}

/** The seed's column names of its views (both schemas), in order: a migrated database has them first. */
export const SEED_VIEW_COLUMNS: Record<string, string[]> = {
  vote_summary: ["law_id", "oui_count", "non_count", "total_votes", "oui_percentage", "non_percentage", "last_vote_at"],
  recent_audit_entries: ["id", "vote_hash", "law_id", "vote", "status", "timestamp", "processed_at", "error_message"],
  top_duplicate_attempts: ["vote_hash", "law_id", "attempt_count", "first_attempt_at", "last_attempt_at", "duration"],
  vote_statistics: [
    "law_id",
    "oui_count",
    "non_count",
    "total_votes",
    "oui_percentage",
    "non_percentage",
    "updated_at",
  ],
  duplicate_summary: ["law_id", "duplicate_count", "unique_citizens", "first_attempt", "last_attempt"],
};

/** Tables that either seed schema creates: statements on any other belong to another subsystem. */
export const SEED_TABLES = new Set([
  "vote_results",
  "vote_audit",
  "duplicate_attempts",
  "laws",
  "aggregation_stats",
  "system_stats",
  "processing_queue_stats",
]);

/** The tables a statement reads or writes. */
export function tablesOf(statement: string): string[] {
  return [...statement.matchAll(/\b(?:FROM|INTO|JOIN)\s+(\w+)/gi)].map((m) => m[1].toLowerCase());
}
