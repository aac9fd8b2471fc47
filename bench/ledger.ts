/**
 * Phase `--ledger`: what the batch ledger costs the counting transaction. Two
 * fresh databases, the service's own writer (`VoteWriter`) on each, one with
 * the ledger and one without (`ledger: false`: no batch id on the audit rows,
 * no digest, no head row, no ledger row — the statement as it was before the
 * ledger). The same batches of distinct votes are committed to both in turns
 * (one batch with, one without, …) so both see the same load on the machine,
 * first by one writer, then by three at once (three instances on one chain:
 * the head row serialises their appends). Times are commit throughput, the
 * part of the drain the ledger touches; the service drain phase of the same
 * run is the full picture (with the ledger).
 *
 * @module
 */

import { migrate } from "../lib/database/migrations.ts";
import type { Vote } from "../lib/vote.ts";
import { VoteWriter } from "../lib/database/writer.ts";
import { createTestDatabase, testPool } from "../tests/support/servers.ts";
import { sha256 } from "../tests/support/votes.ts";
import type { Options } from "./common.ts";
import { progress, type Row, say } from "./report.ts";

/** Rows for `n` votes with and without the ledger, with 1 and with 3 writers. */
export async function ledgerCost(options: Options, n: number, signal: AbortSignal): Promise<Row[]> {
  const rows: Row[] = [];
  for (const writers of [1, 3]) {
    await using withDb = await createTestDatabase();
    await using withoutDb = await createTestDatabase();
    const pools = [testPool(withDb.url, writers + 1), testPool(withoutDb.url, writers + 1)];
    try {
      for (const pool of pools) await migrate(pool);
      const on = Array.from({ length: writers }, (_, i) => new VoteWriter(pools[0], { instance: `w${i}` }));
      const off = Array.from(
        { length: writers },
        (_, i) => new VoteWriter(pools[1], { instance: `w${i}`, ledger: false }),
      );
      const spent = { on: 0, off: 0 };
      const ratios: number[] = [];
      const size = options.batchSize;
      for (let start = 0, round = 0; start < n; start += size * writers, round++) {
        signal.throwIfAborted();
        const batches = Array.from(
          { length: writers },
          (_, w) => votes(start + w * size, Math.min(size, n - start - w * size), options.laws),
        ).filter((b) => b.length > 0);
        // Alternate which goes first, so neither always runs on a warmer cache.
        const took = { on: 0, off: 0 };
        for (const which of round % 2 === 0 ? ["on", "off"] as const : ["off", "on"] as const) {
          const t0 = performance.now();
          await Promise.all(batches.map((b, w) => (which === "on" ? on : off)[w].commit(b)));
          took[which] = performance.now() - t0;
          spent[which] += took[which];
        }
        ratios.push(took.on / took.off);
        progress(`ledger cost, ${writers} writer(s): ${Math.min(n, start + size * writers)}/${n} votes`);
      }
      const [{ batches }] = await withDb.sql`select count(*)::int as batches from vote_ledger`;
      const [{ none }] = await withoutDb.sql`select count(*)::int as none from vote_ledger`;
      // The median of the paired rounds: a neighbour's burst on this shared machine hits one round, not the result.
      const cost = 100 * (ratios.sort((a, b) => a - b)[Math.floor(ratios.length / 2)] - 1);
      const total = 100 * (spent.on - spent.off) / spent.off;
      say(
        `ledger cost, ${writers} writer(s): ${n} votes committed in ${(spent.off / 1000).toFixed(2)} s without, ` +
          `${(spent.on / 1000).toFixed(2)} s with the ledger (${total.toFixed(1)} % in total, median of ` +
          `${ratios.length} paired rounds ${cost.toFixed(1)} %); ${batches} ledger rows`,
      );
      const label = `commit only, ${writers} writer${writers > 1 ? "s" : ""}`;
      rows.push(
        {
          phase: `${label}, no ledger`,
          n,
          seconds: spent.off / 1000,
          rate: n / (spent.off / 1000),
          exact: none === 0,
          notes: [],
        },
        {
          phase: `${label}, with ledger (${cost >= 0 ? "+" : ""}${cost.toFixed(1)} % time, median)`,
          n,
          seconds: spent.on / 1000,
          rate: n / (spent.on / 1000),
          exact: batches === Math.ceil(n / size),
          notes: [
            `${label}: the ledger took ${cost.toFixed(1)} % more commit time, median of ${ratios.length} ` +
            `paired rounds (${total.toFixed(1)} % in total; ${batches} batches of ${size}, ${options.laws} laws)`,
          ],
        },
      );
    } finally {
      for (const pool of pools) await pool.end({ timeout: 1 });
    }
  }
  return rows;
}

function votes(first: number, count: number, laws: number): Vote[] {
  return Array.from({ length: Math.max(0, count) }, (_, i) => {
    const n = first + i;
    return {
      hash: sha256(`ledger-bench-${n}`),
      citizenId: `c-${n}`,
      lawId: `LAW-${String(n % laws).padStart(3, "0")}`,
      choice: (n * 2654435761) % 100 < 55 ? "oui" : "non",
      timestamp: "2026-11-22T10:00:00Z",
    };
  });
}
