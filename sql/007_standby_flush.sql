-- 007: standby_flush_lsns(), for POSTGRES_MIN_STANDBYS.
--
-- With POSTGRES_MIN_STANDBYS=N the service acknowledges a batch only once N streaming standbys have
-- flushed its commit (lib/database/standbys.ts). pg_stat_replication shows the standbys' positions only to
-- superusers and members of pg_read_all_stats, which would let the service's role read every statistics
-- view of the server. This function shows it just those positions: it runs as its owner (the role that
-- applies the migrations), and the role script (sql/role_vote_aggregator.sql) grants it EXECUTE.

-- step: standby_flush_lsns function
CREATE OR REPLACE FUNCTION standby_flush_lsns()
RETURNS TABLE (standby text, flushed pg_lsn)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
    SELECT application_name::text, flush_lsn
    FROM pg_stat_replication
    WHERE state = 'streaming' AND flush_lsn IS NOT NULL
$$;

-- step: standby_flush_lsns not for everyone
REVOKE ALL ON FUNCTION standby_flush_lsns() FROM PUBLIC;
