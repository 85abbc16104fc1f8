-- How long ago, in seconds, the oldest transaction holding back this
-- database's xmin horizon began: a session's transaction with a snapshot or
-- a transaction id (an idle one in a transaction holds it too), or a
-- prepared transaction. NULL when none does. This session's own statement
-- is left out; replication slots hold the horizon too but have no start time.
SELECT extract(epoch FROM now() - least(
    (SELECT min(a.xact_start) FROM pg_stat_activity a
     WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
       AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)),
    (SELECT min(p.prepared) FROM pg_prepared_xacts p WHERE p.database = current_database())
))::float8 AS age
