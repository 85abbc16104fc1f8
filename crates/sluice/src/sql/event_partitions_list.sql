-- The partitions of sluice.events, by transaction id: each with its range,
-- when it was made, first written into and sealed, whether it is the kept
-- events' partition, whether new transactions can still write into it (its
-- range reaches past the next transaction id), and its size on disk.
SELECT p.name, p.lo::text::bigint AS lo, p.hi::text::bigint AS hi, p.created_at, p.opened_at, p.sealed_at,
       p.kept,
       p.hi > pg_snapshot_xmax(pg_current_snapshot()) AS open,
       p.lo >= pg_snapshot_xmax(pg_current_snapshot()) AS ahead,
       coalesce(pg_total_relation_size(to_regclass(format('sluice.%I', p.name))), 0) AS bytes
FROM sluice.event_partitions p
ORDER BY p.lo, p.hi
