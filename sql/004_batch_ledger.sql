-- 004: the batch ledger: every committed batch that counted a vote appends one row, chained
-- by SHA-256 to the row before it, in the counting transaction (lib/database/sql/count_votes.ts). `deno task verify`
-- (lib/audit/) replays the chain against vote_audit and recounts vote_results.
--
-- * vote_audit.batch_id ties each counted vote to the batch that counted it. Nullable: the validation
--   worker's 'validated' rows have none until counted, and rows counted before this migration have
--   none (verify recounts them as "counted before the ledger").
-- * vote_ledger: one row per batch; seq is the position in the one chain (1, 2, …), digest =
--   sha256(prev_digest || canonical encoding), see lib/audit/chain.ts for the encoding.
-- * ledger_head: one row, the chain's head. Counting updates it (the row lock serialises appends from
--   every instance: one chain, no races) and inserts the ledger row from what the update returned.
-- * Triggers refuse UPDATE, DELETE and TRUNCATE on vote_ledger for everyone, the owner included
--   (a superuser can still bypass them: the published head digest is what proves nothing changed).

-- step: vote_audit.batch_id
ALTER TABLE vote_audit ADD COLUMN IF NOT EXISTS batch_id uuid;
-- verify reads the audit trail batch by batch (linear, with progress). Batch ids are time-ordered
-- (UUIDv7) and a batch's rows are written together, so a BRIN index (a min/max per few pages) finds
-- them, at almost no cost per counted vote: a B-tree index here cost the counting ~10 % (docs/audit.md). A BRIN range is summarised once full (autosummarize, by autovacuum; verify also
-- asks for it first): until then a query reads the range's pages, so the tail of the table is read
-- by every chunk of verify — right, only slower.
CREATE INDEX IF NOT EXISTS vote_audit_batch ON vote_audit USING brin (batch_id)
    WITH (pages_per_range = 32, autosummarize = on);

-- step: vote_ledger
CREATE TABLE IF NOT EXISTS vote_ledger (
    seq         bigint PRIMARY KEY CONSTRAINT vote_ledger_seq_check CHECK (seq > 0),
    batch_id    uuid NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    instance    text,
    votes       integer NOT NULL CONSTRAINT vote_ledger_votes_check CHECK (votes > 0),
    -- {"LAW-001": [oui, non, "<sha256 of the law's votes>"], …}
    laws        jsonb NOT NULL,
    prev_digest char(64) NOT NULL,
    digest      char(64) NOT NULL
);

CREATE TABLE IF NOT EXISTS ledger_head (
    id          integer PRIMARY KEY CONSTRAINT ledger_head_one_row CHECK (id = 1),
    seq         bigint NOT NULL,
    prev_digest char(64) NOT NULL,
    digest      char(64) NOT NULL
);

INSERT INTO ledger_head (id, seq, prev_digest, digest)
VALUES (1, 0, repeat('0', 64), repeat('0', 64))
ON CONFLICT (id) DO NOTHING;

-- step: vote_ledger is append-only
CREATE OR REPLACE FUNCTION vote_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'vote_ledger is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'A counted batch cannot be changed; verify (deno task verify) reports any difference.';
END;
$$;

DROP TRIGGER IF EXISTS vote_ledger_no_update ON vote_ledger;
CREATE TRIGGER vote_ledger_no_update BEFORE UPDATE OR DELETE ON vote_ledger
    FOR EACH ROW EXECUTE FUNCTION vote_ledger_append_only();
DROP TRIGGER IF EXISTS vote_ledger_no_truncate ON vote_ledger;
CREATE TRIGGER vote_ledger_no_truncate BEFORE TRUNCATE ON vote_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION vote_ledger_append_only();
