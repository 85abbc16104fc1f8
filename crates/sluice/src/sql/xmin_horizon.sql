-- What holds back vacuum in this database: the oldest transaction snapshot
-- or id still needed by a session of this database (other than this one), a
-- prepared transaction of it, or a replication slot (a physical one holds
-- every database back). Dead rows newer than it cannot be removed, in
-- Sluice's tables and every other of the database; sessions of other
-- databases hold back only the shared catalogs. One row, the oldest holder,
-- or none when nothing is older than this statement.
SELECT h.kind, h.pid, h.application, h.state, h.database, h.query_start, h.since,
       extract(epoch FROM now() - h.since)::double precision AS age_seconds,
       age(h.xmin)::bigint AS xid_age
FROM (
    SELECT 'session'::text AS kind, a.pid, a.application_name AS application, a.state,
           a.datname::text AS database, a.query_start, coalesce(a.xact_start, a.query_start) AS since,
           coalesce(a.backend_xid, a.backend_xmin) AS xmin
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
    UNION ALL
    SELECT 'prepared transaction', NULL, p.gid, 'prepared', p.database::text, NULL, p.prepared, p.transaction
    FROM pg_prepared_xacts p
    WHERE p.database = current_database()
    UNION ALL
    SELECT 'replication slot', r.active_pid, r.slot_name::text, CASE WHEN r.active THEN 'active' ELSE 'inactive' END,
           r.database::text, NULL, NULL, coalesce(r.xmin, r.catalog_xmin)
    FROM pg_replication_slots r
    WHERE (r.xmin IS NOT NULL OR r.catalog_xmin IS NOT NULL)
      AND (r.database IS NULL OR r.database = current_database())
) h
ORDER BY age(h.xmin) DESC, h.since
LIMIT 1
