-- 006: vote_audit_batch without autosummarize.
--
-- 004 built the BRIN index with autosummarize = on: each time a batch fills a 32-page range, the
-- counting statement asks autovacuum to summarise it. Autovacuum takes such requests from a queue of a
-- few hundred, emptied only when it visits the database (once a minute): under a sustained drain the
-- queue is full after a few hundred batches, and every batch after that logs "request for BRIN range
-- summarization for index "vote_audit_batch" page N was not recorded" with the whole counting
-- statement (about 6 kB of log per batch: ~200 entries in a 300,000-vote drain).
--
-- Nothing needs the requests: VACUUM (autovacuum runs it on vote_audit as rows are inserted)
-- summarises every full range anyway, and `deno task verify` summarises what is left before it reads
-- (lib/audit/verify.ts). A range not yet summarised is read whole by verify: right, only slower.

-- step: vote_audit_batch autosummarize off
ALTER INDEX IF EXISTS vote_audit_batch SET (autosummarize = off);
