/**
 * Phase `--recount N`: how fast `verify` recounts and replays a large audit
 * trail. A fresh database gets N counted votes in batches of BATCH_SIZE
 * (one `INSERT … SELECT generate_series`), a ledger chained over them by the
 * counting statement's own ledger CTEs (lib/database/sql/append_ledger.ts), batch after
 * batch, and the matching `vote_results`; then `verify` runs on it, timed, and
 * must agree. The database is dropped afterwards.
 *
 * @module
 */

import { verify } from "../lib/audit/verify.ts";
import type { Sql } from "../lib/database/pool.ts";
import { migrate } from "../lib/database/migrations.ts";
import { appendLedger } from "../lib/database/sql/append_ledger.ts";
import { createTestDatabase, testPool } from "../tests/support/servers.ts";
import type { Options } from "./common.ts";
import { progress, type Row, say } from "./report.ts";

/** Builds a database of `n` counted votes and times `verify` on it. */
export async function recountRate(options: Options, n: number, signal: AbortSignal): Promise<Row> {
  await using db = await createTestDatabase();
  const pool = testPool(db.url, 2);
  try {
    await migrate(pool);
    const size = options.batchSize;
    const t0 = performance.now();
    // Built once after the rows, not row by row (random keys): minutes saved at millions of rows.
    await db.sql`drop index vote_audit_counted_key`;
    // Batch b's id: its number in the UUIDv7 time field, so ids grow as the service's do.
    await db.sql`
      insert into vote_audit (vote_hash, law_id, vote, choice, status, batch_id)
      select encode(sha256(convert_to('recount-' || i, 'UTF8')), 'hex'), 'LAW-' || lpad((i % ${options.laws})::text, 3, '0'),
             c, c, 'aggregated',
             (lpad(to_hex(i / ${size} + 1), 12, '0') || '7000' || '8000' || lpad(to_hex(i / ${size} + 1), 12, '0'))::uuid
      from generate_series(0, ${n - 1}) as i,
           lateral (select case when hashint4(i) % 100 < 55 then 'oui' else 'non' end as c) as ch`;
    signal.throwIfAborted();
    // As sql/002_seed_contract.sql creates it.
    await db.sql`create unique index vote_audit_counted_key on vote_audit (vote_hash) where status = 'aggregated'`;
    await db.sql`
      insert into vote_results (law_id, oui_count, non_count)
      select law_id, count(*) filter (where choice = 'oui'), count(*) filter (where choice = 'non')
      from vote_audit group by law_id`;
    await db.sql`analyze vote_audit`;
    await db.sql`select brin_summarize_new_values('vote_audit_batch')`;
    // No JIT for the many small statements that follow (new connections only).
    await db.sql.unsafe(`alter database ${db.name} set jit = off`);
    const chain = testPool(db.url, 1);
    say(`recount: ${n} audit rows written in ${((performance.now() - t0) / 1000).toFixed(1)} s; chaining the ledger`);
    const batches = Math.ceil(n / size);
    for (let seq = 1; seq <= batches; seq++) {
      if (seq % 200 === 1) signal.throwIfAborted();
      await chainBatch(chain, seq);
      if (seq % 100 === 0) progress(`recount: ledger ${seq}/${batches}`);
    }
    await chain.end({ timeout: 1 });
    say(`recount: ledger of ${batches} batches chained; verifying`);
    const report = await verify(pool, { onProgress: (done, total) => progress(`recount: verify ${done}/${total}`) });
    const rate = report.auditRows / report.seconds;
    say(
      `recount: verify read ${report.auditRows} audit rows in ${report.seconds.toFixed(2)} s (${
        Math.round(rate)
      } rows/s)`,
    );
    return {
      phase: "verify (recount + chain replay)",
      n,
      seconds: report.seconds,
      rate,
      exact: report.ok && report.ledger.votes === n && report.auditRows === n,
      notes: [
        `verify: ${n} audit rows, ${batches} batches, ${options.laws} laws: ${Math.round(rate)} rows/s` +
        (report.ok ? "" : `; FINDINGS: ${JSON.stringify(report.findings.slice(0, 3))}`),
      ],
    };
  } finally {
    await pool.end({ timeout: 1 });
  }
}

/** Appends batch `seq` to the ledger from its audit rows, with the counting statement's own CTEs. */
async function chainBatch(sql: Sql, seq: number): Promise<void> {
  const hex = seq.toString(16).padStart(12, "0");
  const batchId = `${hex.slice(0, 8)}-${hex.slice(8)}-7000-8000-${hex}`;
  const [{ appended }] = await sql`
    with counted as (
      select vote_hash, law_id, choice from vote_audit where batch_id = ${batchId}::uuid
    ),
    upserted as (select 1),
    ${appendLedger(sql, { batchId, instance: "bench" })}
    select (select seq from ledger_row) as appended`;
  if (Number(appended) !== seq) throw new Error(`batch ${seq} was appended as ${appended}`);
}
