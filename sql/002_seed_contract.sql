-- 002: one schema for every service of the seed system, adopted in place.
--
-- It starts from any of three databases: this service's own (001 on an empty database), the seed
-- system's data/init_db.sql, or the seed aggregator's services/aggregation/init_db.sql (001 left their
-- tables as they were). It adds what is missing, relaxes what the other writers cannot satisfy, and
-- changes no stored value: no row is deleted, merged or recomputed, except where a new column is
-- derived from the row itself (vote_results.total_votes) or a zone-less timestamp column becomes
-- timestamptz (read as UTC). What it does, and why:
--
-- * vote_results.total_votes, a plain column (the seed aggregator writes it), kept equal to
--   oui_count + non_count by the counting statement, by a trigger for any other writer, and checked.
-- * vote_audit may hold several rows per hash (the validation worker writes one per outcome), with
--   the seed's vote, status, error_message, metadata. A vote is counted when its row has status
--   'aggregated'; vote_audit_counted_key makes that unique per hash: the database, not the service,
--   guarantees that a vote is counted once. vote_audit_validated_hash finds the rows the worker wrote
--   before publishing ('validated'), which the service moves to 'aggregated' when it counts them.
--   Rows this service wrote before are all counted: they read as 'aggregated'.
-- * duplicate_attempts keeps one row per distinct attempt (its content key, now a partial index over
--   the rows that carry detected_at, so that seed-era rows need not be unique) and gains the seed's
--   attempt_count, first_attempt_at, last_attempt_at.
-- * aggregation_stats gains the seed's columns next to this service's.
-- * laws, system_stats, processing_queue_stats exist, and the five views have the seed's column names.
--
-- The views are dropped and created again (their grants restored) because their columns change
-- type or order; each step below is named in the error if it fails.

-- step: helpers
CREATE FUNCTION pg_temp.has_column(t regclass, c name) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = t AND attname = c AND attnum > 0 AND NOT attisdropped)
$$;

-- Zone-less timestamps written by the seed are taken as UTC (its containers ran in UTC).
CREATE FUNCTION pg_temp.to_timestamptz(t regclass, c name) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT atttypid FROM pg_attribute WHERE attrelid = t AND attname = c AND NOT attisdropped)
       = 'timestamp'::regtype THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I TYPE timestamptz USING %I AT TIME ZONE %L', t, c, c, 'UTC');
    END IF;
END
$$;

-- step: views (saved grants, dropped; created again at the end)
CREATE TEMP TABLE va_view_grants ON COMMIT DROP AS
SELECT c.relname::text AS view, a.grantee, a.privilege_type, a.is_grantable
FROM pg_class c
CROSS JOIN LATERAL aclexplode(c.relacl) a
WHERE c.oid IN (SELECT to_regclass(v) FROM unnest(ARRAY['vote_statistics', 'duplicate_summary', 'vote_summary',
                                                         'recent_audit_entries', 'top_duplicate_attempts']) v)
  AND a.grantee <> c.relowner;

DROP VIEW IF EXISTS vote_statistics, duplicate_summary, vote_summary, recent_audit_entries, top_duplicate_attempts;

-- step: vote_results
DO $$
BEGIN
    IF NOT pg_temp.has_column('vote_results', 'total_votes') THEN
        -- Filled from each row by a generated column, then made a plain one: an UPDATE would fire the
        -- updated_at trigger and rewrite every row's updated_at.
        ALTER TABLE vote_results
            ADD COLUMN total_votes bigint GENERATED ALWAYS AS (coalesce(oui_count, 0) + coalesce(non_count, 0)) STORED;
        ALTER TABLE vote_results ALTER COLUMN total_votes DROP EXPRESSION;
        ALTER TABLE vote_results ALTER COLUMN total_votes SET NOT NULL, ALTER COLUMN total_votes SET DEFAULT 0;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_constraint
                   WHERE conrelid = 'vote_results'::regclass AND conname = 'vote_results_total_check') THEN
        ALTER TABLE vote_results
            ADD CONSTRAINT vote_results_total_check CHECK (total_votes = oui_count + non_count);
    END IF;
    PERFORM pg_temp.to_timestamptz('vote_results', 'updated_at');
    -- Whoever writes a row (an operator's fix, the seed aggregator), total_votes follows the counts.
    CREATE OR REPLACE FUNCTION vote_results_total_votes() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        NEW.total_votes := NEW.oui_count + NEW.non_count;
        RETURN NEW;
    END;
    $f$;
    CREATE TRIGGER vote_results_total_votes BEFORE INSERT OR UPDATE ON vote_results
        FOR EACH ROW EXECUTE FUNCTION vote_results_total_votes();
    -- One updated_at trigger is enough: the seed's, where it has one.
    IF EXISTS (SELECT FROM pg_trigger
               WHERE tgrelid = 'vote_results'::regclass AND tgname = 'update_vote_results_updated_at') THEN
        DROP TRIGGER IF EXISTS vote_results_touch_updated_at ON vote_results;
    END IF;
END
$$;

-- step: vote_audit columns
ALTER TABLE vote_audit
    ADD COLUMN IF NOT EXISTS citizen_id varchar(100),
    ADD COLUMN IF NOT EXISTS vote varchar(10) CONSTRAINT vote_audit_vote_check CHECK (vote IN ('oui', 'non')),
    ADD COLUMN IF NOT EXISTS choice varchar(10) CONSTRAINT vote_audit_choice_check CHECK (choice IN ('oui', 'non')),
    ADD COLUMN IF NOT EXISTS processed_at timestamptz,
    ADD COLUMN IF NOT EXISTS error_message text,
    ADD COLUMN IF NOT EXISTS metadata jsonb;

DO $$
BEGIN
    IF NOT pg_temp.has_column('vote_audit', 'status') THEN
        -- Every row written before (by this service, or by the seed aggregator's schema) was counted.
        ALTER TABLE vote_audit
            ADD COLUMN status varchar(20) NOT NULL DEFAULT 'aggregated'
                CONSTRAINT vote_audit_status_check
                CHECK (status IN ('pending', 'validated', 'duplicate', 'invalid', 'aggregated'));
        ALTER TABLE vote_audit ALTER COLUMN status DROP DEFAULT;
    END IF;
    PERFORM pg_temp.to_timestamptz('vote_audit', 'timestamp');
END
$$;

-- The validation worker sends no citizen id; this service writes both vote and choice, older rows
-- hold one of them; a vote may come without a timestamp.
ALTER TABLE vote_audit
    ALTER COLUMN citizen_id DROP NOT NULL,
    ALTER COLUMN vote DROP NOT NULL,
    ALTER COLUMN choice DROP NOT NULL,
    ALTER COLUMN "timestamp" DROP NOT NULL,
    ALTER COLUMN processed_at SET DEFAULT now();

-- step: vote_audit keys (one counted row per hash)
DO $$
DECLARE
    key record;
    fk record;
    hash text;
    extra bigint;
BEGIN
    -- A key over vote_hash alone (this service's primary key, the seed aggregator's UNIQUE, and the
    -- seed's foreign key onto it) would refuse the worker's second row for a hash.
    FOR key IN
        SELECT k.conname, k.conindid
        FROM pg_constraint k
        WHERE k.conrelid = 'vote_audit'::regclass AND k.contype IN ('p', 'u')
          AND k.conkey = ARRAY[(SELECT attnum FROM pg_attribute
                                WHERE attrelid = 'vote_audit'::regclass AND attname = 'vote_hash')]
    LOOP
        FOR fk IN
            SELECT f.conrelid::regclass AS tbl, f.conname
            FROM pg_constraint f
            WHERE f.contype = 'f' AND f.confrelid = 'vote_audit'::regclass AND f.conindid = key.conindid
        LOOP
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
        END LOOP;
        EXECUTE format('ALTER TABLE vote_audit DROP CONSTRAINT %I', key.conname);
    END LOOP;

    IF to_regclass('vote_audit_counted_key') IS NULL THEN
        SELECT vote_hash, count(*) - 1 INTO hash, extra
        FROM vote_audit WHERE status = 'aggregated' GROUP BY vote_hash HAVING count(*) > 1 LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'vote_audit holds more than one ''aggregated'' row for vote_hash % (% more), so the unique index vote_audit_counted_key cannot be built', hash, extra
                USING TABLE = 'vote_audit',
                      HINT = 'Decide which row was counted and set the others to status ''duplicate'' '
                             '(UPDATE vote_audit SET status = ''duplicate'' WHERE id IN (…)), for every such hash: '
                             'SELECT vote_hash FROM vote_audit WHERE status = ''aggregated'' GROUP BY 1 HAVING count(*) > 1; '
                             'then start the service again.';
        END IF;
        CREATE UNIQUE INDEX vote_audit_counted_key ON vote_audit (vote_hash) WHERE status = 'aggregated';
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS vote_audit_validated_hash ON vote_audit (vote_hash) WHERE status = 'validated';

-- step: duplicate_attempts
DO $$
BEGIN
    PERFORM pg_temp.to_timestamptz('duplicate_attempts', 'attempt_timestamp');
END
$$;

ALTER TABLE duplicate_attempts
    ADD COLUMN IF NOT EXISTS citizen_id varchar(100),
    ADD COLUMN IF NOT EXISTS choice varchar(10),
    ADD COLUMN IF NOT EXISTS attempt_timestamp timestamptz,
    -- Seed-era rows keep detected_at, first_attempt_at and last_attempt_at empty where they had none.
    ADD COLUMN IF NOT EXISTS detected_at timestamptz,
    ADD COLUMN IF NOT EXISTS attempt_count integer NOT NULL DEFAULT 1
        CONSTRAINT duplicate_attempts_count_check CHECK (attempt_count > 0),
    ADD COLUMN IF NOT EXISTS first_attempt_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_attempt_at timestamptz;

ALTER TABLE duplicate_attempts
    ALTER COLUMN citizen_id DROP NOT NULL,
    ALTER COLUMN detected_at SET DEFAULT now(),
    ALTER COLUMN first_attempt_at SET DEFAULT now(),
    ALTER COLUMN last_attempt_at SET DEFAULT now();

DO $$
DECLARE
    key record;
BEGIN
    -- The seed's one-row-per-(hash, law) key would refuse a second, different attempt; this service
    -- records each distinct attempt once.
    FOR key IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'duplicate_attempts'::regclass AND contype = 'u'
          AND conname <> 'duplicate_attempts_content_key'
    LOOP
        EXECUTE format('ALTER TABLE duplicate_attempts DROP CONSTRAINT %I', key.conname);
    END LOOP;
END
$$;

CREATE UNIQUE INDEX IF NOT EXISTS duplicate_attempts_content_key
    ON duplicate_attempts (vote_hash, law_id, choice, attempt_timestamp, citizen_id) NULLS NOT DISTINCT
    WHERE detected_at IS NOT NULL;

-- step: aggregation_stats
DO $$
BEGIN
    PERFORM pg_temp.to_timestamptz('aggregation_stats', 'timestamp');
END
$$;

ALTER TABLE aggregation_stats
    ADD COLUMN IF NOT EXISTS votes_counted integer,
    ADD COLUMN IF NOT EXISTS processing_time_ms double precision,
    ADD COLUMN IF NOT EXISTS instance text,
    ADD COLUMN IF NOT EXISTS created_at timestamptz,
    ADD COLUMN IF NOT EXISTS processing_duration_ms integer,
    ADD COLUMN IF NOT EXISTS votes_processed integer,
    ADD COLUMN IF NOT EXISTS errors_count integer DEFAULT 0,
    ADD COLUMN IF NOT EXISTS "timestamp" timestamptz;

ALTER TABLE aggregation_stats
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN "timestamp" SET DEFAULT now();

-- step: laws, system_stats, processing_queue_stats
ALTER TABLE laws
    ADD COLUMN IF NOT EXISTS category varchar(100),
    ADD COLUMN IF NOT EXISTS start_date timestamptz,
    ADD COLUMN IF NOT EXISTS end_date timestamptz;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'laws'::regclass AND tgname = 'update_laws_updated_at') THEN
        DROP TRIGGER IF EXISTS laws_touch_updated_at ON laws;
    END IF;
    IF to_regclass('system_stats') IS NULL THEN
        CREATE TABLE system_stats (
            id          serial PRIMARY KEY,
            stat_key    varchar(100) NOT NULL UNIQUE CONSTRAINT system_stats_key_check CHECK (stat_key <> ''),
            stat_value  bigint NOT NULL DEFAULT 0,
            stat_type   varchar(50) NOT NULL DEFAULT 'counter'
                        CONSTRAINT system_stats_type_check CHECK (stat_type IN ('counter', 'gauge', 'histogram')),
            description text,
            updated_at  timestamptz DEFAULT now()
        );
        CREATE TRIGGER system_stats_touch_updated_at
            BEFORE UPDATE ON system_stats FOR EACH ROW EXECUTE FUNCTION touch_updated_at();
        INSERT INTO system_stats (stat_key, stat_type, description) VALUES
            ('total_votes_received', 'counter', 'Total number of votes received'),
            ('total_votes_validated', 'counter', 'Total number of votes validated'),
            ('total_votes_aggregated', 'counter', 'Total number of votes aggregated'),
            ('total_duplicates', 'counter', 'Total number of duplicate attempts'),
            ('total_invalid', 'counter', 'Total number of invalid votes'),
            ('peak_votes_per_second', 'gauge', 'Peak votes per second'),
            ('current_validation_queue_depth', 'gauge', 'Current validation queue depth'),
            ('current_aggregation_queue_depth', 'gauge', 'Current aggregation queue depth');
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS processing_queue_stats (
    id              bigserial PRIMARY KEY,
    queue_name      varchar(50) NOT NULL
                    CONSTRAINT queue_stats_name_check CHECK (queue_name IN ('validation', 'aggregation', 'review')),
    messages_count  integer NOT NULL DEFAULT 0,
    consumers_count integer NOT NULL DEFAULT 0,
    messages_rate   numeric(10, 2),
    "timestamp"     timestamptz DEFAULT now()
);

-- step: views (created again, grants restored)
CREATE VIEW vote_summary AS
SELECT law_id,
       oui_count,
       non_count,
       total_votes,
       CASE WHEN total_votes > 0 THEN round(oui_count::numeric / total_votes * 100, 2) ELSE 0 END AS oui_percentage,
       CASE WHEN total_votes > 0 THEN round(non_count::numeric / total_votes * 100, 2) ELSE 0 END AS non_percentage,
       updated_at AS last_vote_at
FROM vote_results
ORDER BY total_votes DESC;

-- This service's rows before 002 hold choice, the worker's hold vote.
CREATE VIEW recent_audit_entries AS
SELECT id, vote_hash, law_id, coalesce(vote, choice) AS vote, status, "timestamp", processed_at, error_message
FROM vote_audit
ORDER BY processed_at DESC NULLS LAST
LIMIT 1000;

-- One row per attempted (hash, law): this service records each distinct attempt as its own row.
CREATE VIEW top_duplicate_attempts AS
SELECT vote_hash,
       law_id,
       sum(attempt_count)::integer AS attempt_count,
       min(coalesce(first_attempt_at, detected_at)) AS first_attempt_at,
       max(coalesce(last_attempt_at, detected_at)) AS last_attempt_at,
       max(coalesce(last_attempt_at, detected_at)) - min(coalesce(first_attempt_at, detected_at)) AS duration
FROM duplicate_attempts
GROUP BY vote_hash, law_id
HAVING sum(attempt_count) > 1
ORDER BY attempt_count DESC
LIMIT 100;

-- The seed aggregator's columns, then this service's title.
CREATE VIEW vote_statistics AS
SELECT r.law_id,
       r.oui_count,
       r.non_count,
       r.oui_count + r.non_count AS total_votes,
       CASE WHEN r.oui_count + r.non_count > 0
            THEN round(r.oui_count::numeric / (r.oui_count + r.non_count) * 100, 2) ELSE 0 END AS oui_percentage,
       CASE WHEN r.oui_count + r.non_count > 0
            THEN round(r.non_count::numeric / (r.oui_count + r.non_count) * 100, 2) ELSE 0 END AS non_percentage,
       r.updated_at,
       l.title
FROM vote_results r
LEFT JOIN laws l USING (law_id)
ORDER BY total_votes DESC;

-- The seed aggregator's columns, then this service's.
CREATE VIEW duplicate_summary AS
SELECT law_id,
       sum(attempt_count) AS duplicate_count,
       count(DISTINCT citizen_id) AS unique_citizens,
       min(attempt_timestamp) AS first_attempt,
       max(attempt_timestamp) AS last_attempt,
       count(DISTINCT vote_hash) AS distinct_hashes,
       min(coalesce(detected_at, first_attempt_at)) AS first_detected,
       max(coalesce(detected_at, last_attempt_at)) AS last_detected
FROM duplicate_attempts
GROUP BY law_id
ORDER BY duplicate_count DESC;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT * FROM va_view_grants LOOP
        EXECUTE format('GRANT %s ON %I TO %s%s', g.privilege_type, g.view,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                       CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$$;
