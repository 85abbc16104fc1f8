-- How sluice.events is cut into partitions (event_partitioning, one row):
-- the span in transaction ids, the partition age and how often the
-- maintenance runs at most, the durations in milliseconds.
SELECT span,
       (extract(epoch FROM max_age) * 1000)::bigint AS max_age_ms,
       (extract(epoch FROM every) * 1000)::bigint AS every_ms
FROM sluice.event_partitioning
