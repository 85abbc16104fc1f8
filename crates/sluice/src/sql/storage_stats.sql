-- Sluice's tables with their rows, dead rows and sizes, and when they were
-- last vacuumed and analyzed (by autovacuum or by hand), from the server's
-- statistics: estimates, cheap to read. Also the server's autovacuum setting.
SELECT c.relname::text AS table_name,
       coalesce(s.n_live_tup, 0) AS live_rows,
       coalesce(s.n_dead_tup, 0) AS dead_rows,
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze,
       current_setting('autovacuum') = 'on' AS autovacuum
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = 'sluice' AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE '\_%'
ORDER BY c.relname
