-- Extends the leases of the tasks worker $4 holds (consumer $1, events $2,
-- attempts $3) by $5 ms, and records the worker's heartbeat and status $6.
WITH extended AS (
    UPDATE sluice.tasks t
    SET lease_until = now() + $5 * interval '1 millisecond'
    FROM unnest($2::bigint[], $3::int[]) AS r(event_id, attempt)
    WHERE t.consumer_id = $1 AND t.event_id = r.event_id AND t.attempt = r.attempt
      AND t.state = 'running' AND t.worker_id = $4
    RETURNING 1
),
beat AS (
    UPDATE sluice.workers
    SET heartbeat_at = now(), status = $6::text::sluice.worker_status
    WHERE id = $4
    RETURNING 1
)
SELECT (SELECT count(*) FROM extended) AS extended, (SELECT count(*) FROM beat) AS registered
