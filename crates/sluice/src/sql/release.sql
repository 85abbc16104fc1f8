-- Hands tasks held by worker $4 back to the queue at once (a shutdown, or
-- Message::release): (consumer $1, event $2[i]) under lease token $3[i]. A
-- task whose handler never started ($5[i] false) gets its attempt back. One
-- whose handler started keeps it, and on its last attempt is discarded, as
-- when its lease is lost: a task whose handler takes its process down (a
-- gateway client crashing on it) must not come back forever. The log gives
-- reason $6 (default: the worker is shutting down).
WITH released AS (
    UPDATE sluice.tasks t
    SET state = CASE WHEN r.started AND t.attempt >= c.max_attempts THEN 'discarded'
                     ELSE 'available' END::sluice.task_state,
        finished_at = CASE WHEN r.started AND t.attempt >= c.max_attempts THEN now() END,
        attempt = t.attempt - CASE WHEN r.started THEN 0 ELSE 1 END,
        lease_until = NULL,
        worker_id = NULL,
        -- A dead letter says why in its history (a mere release is no error).
        errors = t.errors || CASE WHEN r.started AND t.attempt >= c.max_attempts
                                  THEN jsonb_build_array(jsonb_build_object(
                                      'attempt', t.attempt, 'at', now(), 'worker', $4::uuid,
                                      'error', 'released on its last attempt: '
                                               || coalesce($6::text, 'worker shutting down')))
                                  ELSE '[]' END
    FROM unnest($2::bigint[], $3::bigint[], $5::bool[]) AS r(event_id, lease_token, started),
         sluice.consumers c
    WHERE t.consumer_id = $1 AND t.event_id = ANY ($2::bigint[])
      AND t.event_id = r.event_id AND t.lease_token = r.lease_token
      AND t.state = 'running' AND t.worker_id = $4 AND c.id = t.consumer_id
    RETURNING t.consumer_id, t.event_id, t.attempt + CASE WHEN r.started THEN 0 ELSE 1 END AS attempt,
              r.started, t.priority, t.state
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority, worker_id)
    SELECT consumer_id, event_id, attempt,
           CASE WHEN state = 'discarded' THEN 'discarded' ELSE 'released' END::sluice.task_action,
           CASE WHEN state = 'discarded' THEN 'released on its last attempt: ' ELSE '' END
               || coalesce($6::text, 'worker shutting down'),
           priority, $4
    FROM released
    WHERE started
),
woken AS (
    -- Tasks came back: wake the stream's subscribers.
    SELECT pg_notify('sluice.' || c.stream_id, '') FROM sluice.consumers c
    WHERE c.id = $1 AND EXISTS (SELECT 1 FROM released WHERE state = 'available')
)
SELECT (SELECT count(*) FROM released) AS released,
       (SELECT count(*) FROM released WHERE state = 'discarded') AS discarded,
       (SELECT count(*) FROM woken) AS woken
