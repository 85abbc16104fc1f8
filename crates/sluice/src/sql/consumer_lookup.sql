-- The consumer a subscriber works for, with the settings it applies.
SELECT c.id, c.max_attempts,
       (extract(epoch FROM c.backoff_initial) * 1000)::bigint AS backoff_initial_ms,
       (extract(epoch FROM c.backoff_max) * 1000)::bigint AS backoff_max_ms,
       (extract(epoch FROM c.lease) * 1000)::bigint AS lease_ms,
       s.id AS stream_id, c.ordered_by_key
FROM sluice.consumers c
JOIN sluice.streams s ON s.id = c.stream_id
WHERE s.name = $1 AND c.name = $2
