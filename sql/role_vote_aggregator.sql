-- The service's least-privilege role: exactly what the service does at run time, nothing more.
--
-- Run as the schema's owner after the migrations were applied (start the service once as the owner):
--   psql -v ON_ERROR_STOP=1 -d election_votes -f sql/role_vote_aggregator.sql
--   psql -d election_votes -c "ALTER ROLE vote_aggregator PASSWORD '…'"
-- then run the service with POSTGRES_USER=vote_aggregator. It is idempotent: run it again after each migration.
--
-- What the service does, and the grant each needs:
--   reads schema_migrations at start (nothing to apply)        SELECT
--   inserts votes, reads them back to classify non-inserts     vote_audit: SELECT, INSERT
--   counts a vote the validation worker recorded first, by     vote_audit: UPDATE of status,
--   moving its row to 'aggregated' (SELECT … FOR UPDATE)         "timestamp", citizen_id only
--   increments per-law totals (INSERT … ON CONFLICT DO UPDATE) vote_results: SELECT, INSERT, UPDATE
--   records each duplicate attempt once (ON CONFLICT reads it) duplicate_attempts: SELECT, INSERT
--   records batch statistics                                   aggregation_stats: INSERT
--   tags each counted vote with its batch                      vote_audit: UPDATE of batch_id
--   appends the batch to the ledger (004), moving the head     vote_ledger: INSERT (and SELECT, which
--     row on by one (UPDATE … RETURNING needs SELECT)            INSERT … RETURNING needs); ledger_head:
--                                                                SELECT, UPDATE
--   their ids                                                  USAGE on these tables' sequences
--   POSTGRES_MIN_STANDBYS: reads the standbys' flushed WAL     EXECUTE on standby_flush_lsns() (007,
--     positions                                                  SECURITY DEFINER: no pg_read_all_stats)
-- It cannot delete or rewrite a vote, truncate a table, change the schema, or read or write anything else;
-- it may append to vote_ledger but never update or delete a ledger row.
--
-- Everyone else: this script only shapes this role. An operator removes UPDATE and DELETE on the audit
-- trail and the ledger from every other role (the owner's own privileges are revoked too; the owner can
-- grant them back, so keep the owner's password offline and publish `verify --digest`):
--   REVOKE UPDATE, DELETE, TRUNCATE ON vote_audit, vote_ledger FROM PUBLIC;
--   REVOKE UPDATE, DELETE, TRUNCATE ON vote_audit, vote_ledger FROM <every other role>;
--   REVOKE UPDATE, DELETE, TRUNCATE ON vote_audit, vote_ledger FROM <owner>;   -- optional, see above
-- (the service's own column grant on vote_audit stays) and checks with
--   SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants
--   WHERE table_name IN ('vote_audit', 'vote_ledger', 'vote_results') AND privilege_type IN ('UPDATE', 'DELETE');
-- vote_ledger's triggers refuse UPDATE, DELETE and TRUNCATE even to its owner.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vote_aggregator') THEN
        CREATE ROLE vote_aggregator LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM vote_aggregator;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM vote_aggregator;
REVOKE CREATE ON SCHEMA public FROM vote_aggregator;
GRANT USAGE ON SCHEMA public TO vote_aggregator;

GRANT SELECT ON schema_migrations TO vote_aggregator;
GRANT SELECT, INSERT, UPDATE (status, "timestamp", citizen_id, batch_id) ON vote_audit TO vote_aggregator;
GRANT SELECT, INSERT, UPDATE ON vote_results TO vote_aggregator;
GRANT SELECT, INSERT ON duplicate_attempts TO vote_aggregator;
GRANT INSERT ON aggregation_stats TO vote_aggregator;
GRANT SELECT, INSERT ON vote_ledger TO vote_aggregator;
GRANT SELECT, UPDATE ON ledger_head TO vote_aggregator;
GRANT EXECUTE ON FUNCTION standby_flush_lsns() TO vote_aggregator;
-- The seed's vote_results has an id sequence too.
DO $$
DECLARE
    seq regclass;
BEGIN
    FOR seq IN
        SELECT d.objid::regclass
        FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        WHERE d.refobjid IN ('vote_audit'::regclass, 'vote_results'::regclass,
                             'duplicate_attempts'::regclass, 'aggregation_stats'::regclass)
          AND d.deptype IN ('a', 'i')
    LOOP
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO vote_aggregator', seq);
    END LOOP;
END
$$;
