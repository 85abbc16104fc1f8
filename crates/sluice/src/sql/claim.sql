-- Claims up to $2 available tasks of consumer $1 for worker $3, with a lease
-- of $4 ms: highest priority first, then queue position. SKIP LOCKED lets
-- competing workers claim disjoint tasks without waiting on each other.
WITH picked AS (
    SELECT t.consumer_id, t.event_id
    FROM sluice.tasks t
    WHERE t.consumer_id = $1
      AND t.state = 'available'
      AND NOT (SELECT c.paused FROM sluice.consumers c WHERE c.id = $1)
    ORDER BY t.priority DESC, t.position
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE sluice.tasks t
    SET state = 'running',
        attempt = t.attempt + 1,
        worker_id = $3,
        lease_until = now() + $4 * interval '1 millisecond'
    FROM picked p
    WHERE t.consumer_id = p.consumer_id AND t.event_id = p.event_id
    RETURNING t.event_id, t.attempt, t.priority, t.position
)
SELECT c.event_id, c.attempt, c.priority, e.subject, e.payload::text AS payload,
       e.metadata::text AS metadata, e.key, e.created_at
FROM claimed c
JOIN sluice.events e ON e.id = c.event_id
ORDER BY c.priority DESC, c.position
