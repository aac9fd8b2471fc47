-- 001: the seed's schema (init_db.sql), made safe for exactly-once counting.
--
-- Differences from the seed, and why:
-- * vote_audit.vote_hash is the deduplication key and the primary key, its only index (the seed indexed
--   it twice and the id once more, which only slowed inserts); citizen_id is nullable because the
--   validation worker sends only the hash.
-- * duplicate_attempts has a unique key over the attempt's content, so a redelivered duplicate is
--   recorded once, not once per delivery.
-- * vote_results has no secondary indexes: it holds one row per law, and an index on updated_at made
--   every increment a non-HOT update.
-- * Timestamps are timestamptz: votes arrive with explicit offsets.
-- * vote_hash is lower-case hex, compared byte-wise (COLLATE "C"): cheaper than a locale's rules on
--   every unique-index probe.
-- Requires PostgreSQL 15 or later (UNIQUE NULLS NOT DISTINCT).
--
-- On a database the seed system created (either seed schema), every table already exists and is left
-- as it is; the two views are created only where missing (the seed's have other columns, and the
-- seed's duplicate_attempts has no detected_at). 002 then reshapes all three kinds of database into
-- one schema. On an empty database this creates exactly what it always created.

CREATE TABLE IF NOT EXISTS laws (
    law_id       VARCHAR(50) PRIMARY KEY,
    title        TEXT,
    description  TEXT,
    status       VARCHAR(20) NOT NULL DEFAULT 'active'
                 CHECK (status IN ('draft', 'active', 'closed')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS vote_results (
    law_id       VARCHAR(50) PRIMARY KEY CHECK (length(law_id) >= 1),
    oui_count    BIGINT NOT NULL DEFAULT 0 CHECK (oui_count >= 0),
    non_count    BIGINT NOT NULL DEFAULT 0 CHECK (non_count >= 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS vote_audit (
    -- The seed's id, still filled in order, but not indexed: no query of the service looks it up.
    id           BIGSERIAL NOT NULL,
    vote_hash    VARCHAR(64) COLLATE "C" PRIMARY KEY CHECK (vote_hash ~ '^[0-9a-f]{64}$'),
    citizen_id   VARCHAR(100),
    law_id       VARCHAR(50) NOT NULL,
    choice       VARCHAR(10) NOT NULL CHECK (choice IN ('oui', 'non')),
    "timestamp"  TIMESTAMPTZ,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS duplicate_attempts (
    id                BIGSERIAL PRIMARY KEY,
    vote_hash         VARCHAR(64) COLLATE "C" NOT NULL,
    citizen_id        VARCHAR(100),
    law_id            VARCHAR(50) NOT NULL,
    choice            VARCHAR(10) NOT NULL,
    -- The attempt's own timestamp, as sent.
    attempt_timestamp TIMESTAMPTZ,
    detected_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT duplicate_attempts_content_key
        UNIQUE NULLS NOT DISTINCT (vote_hash, law_id, choice, attempt_timestamp, citizen_id)
);

CREATE TABLE IF NOT EXISTS aggregation_stats (
    id                 BIGSERIAL PRIMARY KEY,
    batch_size         INTEGER NOT NULL CHECK (batch_size >= 0),
    votes_counted      INTEGER NOT NULL CHECK (votes_counted >= 0),
    -- Milliseconds from the batch's first message to its commit.
    processing_time_ms DOUBLE PRECISION,
    instance           TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS vote_results_touch_updated_at ON vote_results;
CREATE TRIGGER vote_results_touch_updated_at
    BEFORE UPDATE ON vote_results
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

DROP TRIGGER IF EXISTS laws_touch_updated_at ON laws;
CREATE TRIGGER laws_touch_updated_at
    BEFORE UPDATE ON laws
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

DO $$
BEGIN
    IF to_regclass('vote_statistics') IS NULL THEN
        CREATE VIEW vote_statistics AS
        SELECT r.law_id,
               l.title,
               r.oui_count,
               r.non_count,
               r.oui_count + r.non_count AS total_votes,
               round(100.0 * r.oui_count / NULLIF(r.oui_count + r.non_count, 0), 2) AS oui_percentage,
               round(100.0 * r.non_count / NULLIF(r.oui_count + r.non_count, 0), 2) AS non_percentage,
               r.updated_at
        FROM vote_results r
        LEFT JOIN laws l USING (law_id);
    END IF;
    IF to_regclass('duplicate_summary') IS NULL AND EXISTS (
        SELECT FROM pg_attribute
        WHERE attrelid = 'duplicate_attempts'::regclass AND attname = 'detected_at' AND NOT attisdropped
    ) THEN
        CREATE VIEW duplicate_summary AS
        SELECT law_id,
               count(*) AS duplicate_count,
               count(DISTINCT vote_hash) AS distinct_hashes,
               min(detected_at) AS first_detected,
               max(detected_at) AS last_detected
        FROM duplicate_attempts
        GROUP BY law_id;
    END IF;
END
$$;
