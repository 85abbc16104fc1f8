-- All consumers, or those of stream $1 when it is not null.
SELECT c.id, s.name AS stream, c.name, c.include_subjects, c.exclude_subjects, c.start_from,
c.max_attempts,
(extract(epoch FROM c.backoff_initial) * 1000)::bigint AS backoff_initial_ms,
(extract(epoch FROM c.backoff_max) * 1000)::bigint AS backoff_max_ms,
(extract(epoch FROM c.lease) * 1000)::bigint AS lease_ms,
(extract(epoch FROM c.completed_retention) * 1000)::bigint AS completed_retention_ms,
(extract(epoch FROM c.dead_retention) * 1000)::bigint AS dead_retention_ms,
(extract(epoch FROM c.log_retention) * 1000)::bigint AS log_retention_ms,
c.ordered_by_key, c.hold_key_on_dead_letter, c.paused, c.created_at
FROM sluice.consumers c
JOIN sluice.streams s ON s.id = c.stream_id
WHERE $1::text IS NULL OR s.name = $1
ORDER BY s.name, c.name
