-- Sluice's tables with their rows, dead rows and sizes, and when they were
-- last vacuumed and analyzed (by autovacuum or by hand), from the server's
-- statistics: estimates, cheap to read. A partitioned table (events) counts
-- its partitions together; its last vacuum is the latest of any partition.
-- Also the server's autovacuum setting.
SELECT c.relname::text AS table_name,
       coalesce(sum(s.n_live_tup), 0)::bigint AS live_rows,
       coalesce(sum(s.n_dead_tup), 0)::bigint AS dead_rows,
       sum(pg_total_relation_size(m.relid))::bigint AS total_bytes,
       sum(pg_indexes_size(m.relid))::bigint AS index_bytes,
       max(greatest(s.last_vacuum, s.last_autovacuum)) AS last_vacuum,
       max(greatest(s.last_analyze, s.last_autoanalyze)) AS last_analyze,
       current_setting('autovacuum') = 'on' AS autovacuum
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT c.oid AS relid UNION SELECT t.relid FROM pg_partition_tree(c.oid) AS t) AS m
LEFT JOIN pg_stat_user_tables s ON s.relid = m.relid
WHERE n.nspname = 'sluice' AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname NOT LIKE '\_%'
GROUP BY c.relname
ORDER BY c.relname
