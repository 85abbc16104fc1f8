-- Hands tasks held by worker $4 back to the queue at once (a shutdown, or
-- Message::release): (consumer $1, event $2[i]) under lease token $3[i]. A
-- task whose handler never started ($5[i] false) gets its attempt back. The
-- log gives reason $6 (default: the worker is shutting down).
WITH released AS (
    UPDATE sluice.tasks t
    SET state = 'available',
        attempt = t.attempt - CASE WHEN r.started THEN 0 ELSE 1 END,
        lease_until = NULL,
        worker_id = NULL
    FROM unnest($2::bigint[], $3::bigint[], $5::bool[]) AS r(event_id, lease_token, started)
    WHERE t.consumer_id = $1 AND t.event_id = ANY ($2::bigint[])
      AND t.event_id = r.event_id AND t.lease_token = r.lease_token
      AND t.state = 'running' AND t.worker_id = $4
    RETURNING t.consumer_id, t.event_id, t.attempt + CASE WHEN r.started THEN 0 ELSE 1 END AS attempt,
              r.started, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority, worker_id)
    SELECT consumer_id, event_id, attempt, 'released', coalesce($6::text, 'worker shutting down'), priority, $4
    FROM released
    WHERE started
),
woken AS (
    -- Tasks came back: wake the stream's subscribers.
    SELECT pg_notify('sluice.' || c.stream_id, '') FROM sluice.consumers c
    WHERE c.id = $1 AND EXISTS (SELECT 1 FROM released)
)
SELECT (SELECT count(*) FROM released) AS released, (SELECT count(*) FROM woken) AS woken
