-- Extends the leases of the tasks worker $4 holds (consumer $1, events $2,
-- attempts $3) by $5 ms, and records the worker's heartbeat and status $6.
-- Rows locked by an ack or a nack in progress are skipped, not waited for:
-- they are being settled, and waiting while holding other rows deadlocked
-- with the acker's batch.
WITH held AS (
    SELECT * FROM unnest($2::bigint[], $3::int[]) AS h(event_id, attempt)
),
mine AS (
    SELECT t.consumer_id, t.event_id
    FROM sluice.tasks t
    JOIN held h ON h.event_id = t.event_id AND h.attempt = t.attempt
    WHERE t.consumer_id = $1 AND t.event_id = ANY ($2::bigint[])
      AND t.state = 'running' AND t.worker_id = $4
    FOR UPDATE OF t SKIP LOCKED
),
extended AS (
    UPDATE sluice.tasks t
    SET lease_until = now() + $5 * interval '1 millisecond'
    FROM mine m
    WHERE t.consumer_id = m.consumer_id AND t.event_id = m.event_id
    RETURNING 1
),
beat AS (
    UPDATE sluice.workers
    SET heartbeat_at = now(), status = $6::text::sluice.worker_status
    WHERE id = $4
    RETURNING 1
)
SELECT (SELECT count(*) FROM extended) AS extended, (SELECT count(*) FROM beat) AS registered
