-- Completes the tasks (consumer $1, event $2[i]) still held under lease
-- token $3[i]: deleted, or marked completed when the consumer keeps completed
-- tasks. Returns the event ids completed; a missing one lost its lease.
-- The `= ANY($2)` lookups keep the plan on the primary key: joined with
-- `held` alone, Postgres hashed every running task of the consumer, dead
-- index entries included, and a flush of 1,000 acks took 350 ms. The state
-- is compared as text so that the partial index of running tasks cannot
-- serve the statement: under a pinned xmin it fills with dead entries
-- (every acked task leaves one), and a bitmap scan of it by consumer read
-- 659,493 of them to ack 1,344 tasks (185 ms).
WITH keep AS (
    SELECT completed_retention > interval '0' AS keep FROM sluice.consumers WHERE id = $1
),
held AS (
    SELECT * FROM unnest($2::bigint[], $3::bigint[]) AS h(event_id, lease_token)
),
deleted AS (
    DELETE FROM sluice.tasks t
    USING held h
    WHERE t.consumer_id = $1 AND t.event_id = ANY ($2::bigint[])
      AND t.event_id = h.event_id AND t.lease_token = h.lease_token
      AND t.state::text = 'running'
      AND NOT coalesce((SELECT keep FROM keep), false)
    RETURNING t.event_id
),
completed AS (
    UPDATE sluice.tasks t
    SET state = 'completed', finished_at = now(), lease_until = NULL
    FROM held h
    WHERE t.consumer_id = $1 AND t.event_id = ANY ($2::bigint[])
      AND t.event_id = h.event_id AND t.lease_token = h.lease_token
      AND t.state::text = 'running'
      AND coalesce((SELECT keep FROM keep), false)
    RETURNING t.event_id
)
SELECT event_id FROM deleted
UNION ALL
SELECT event_id FROM completed
