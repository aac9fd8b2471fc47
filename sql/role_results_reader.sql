-- The results-only instances' role (`vote-aggregator results`): it reads the totals, and nothing else.
--
-- Run as the schema's owner after the migrations were applied (a counting instance applies them), on the
-- primary (a streaming standby gets the role and its grants by replication):
--   psql -v ON_ERROR_STOP=1 -d election_votes -f sql/role_results_reader.sql
--   psql -d election_votes -c "ALTER ROLE vote_results_reader PASSWORD '…'"
-- then run `vote-aggregator results` with RESULTS_DATABASE_URL=postgres://vote_results_reader:…@<standby>/election_votes.
-- It is idempotent: run it again after each migration.
--
-- What a results-only instance does, and the grant each needs:
--   checks at start that the schema is current       schema_migrations: SELECT
--   reads the per-law totals (every second)           vote_results: SELECT
-- Every transaction of the role is read-only (default_transaction_read_only), as on a standby: it cannot
-- write even where a grant would let it. It cannot read a vote, the audit trail or the ledger.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vote_results_reader') THEN
        CREATE ROLE vote_results_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
    END IF;
END
$$;

ALTER ROLE vote_results_reader SET default_transaction_read_only = on;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM vote_results_reader;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM vote_results_reader;
REVOKE CREATE ON SCHEMA public FROM vote_results_reader;
GRANT USAGE ON SCHEMA public TO vote_results_reader;

GRANT SELECT ON schema_migrations TO vote_results_reader;
GRANT SELECT ON vote_results TO vote_results_reader;
