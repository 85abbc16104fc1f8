-- A failed attempt of (consumer $1, event $2) under lease token $3, by worker $4, with
-- error $5: the next attempt is scheduled after $6 ms, or the task is
-- discarded when $7 (no retry) or when it was the last attempt. The error
-- joins the task's history and the audit log. No row: the lease was lost.
WITH failed AS (
    UPDATE sluice.tasks t
    SET state = CASE WHEN $7 OR t.attempt >= c.max_attempts THEN 'discarded' ELSE 'scheduled' END::sluice.task_state,
        schedule_at = CASE WHEN $7 OR t.attempt >= c.max_attempts THEN NULL
                           ELSE now() + $6 * interval '1 millisecond' END,
        finished_at = CASE WHEN $7 OR t.attempt >= c.max_attempts THEN now() END,
        lease_until = NULL,
        worker_id = NULL,
        errors = t.errors || jsonb_build_array(jsonb_build_object(
            'attempt', t.attempt, 'at', now(), 'error', $5::text, 'worker', $4::uuid))
    FROM sluice.consumers c
    WHERE c.id = t.consumer_id
      AND t.consumer_id = $1 AND t.event_id = $2 AND t.lease_token = $3 AND t.state = 'running'
    RETURNING t.consumer_id, t.event_id, t.attempt, t.state, t.schedule_at, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority, schedule_at, worker_id)
    SELECT consumer_id, event_id, attempt,
           CASE WHEN state = 'discarded' THEN 'discarded' ELSE 'failed' END::sluice.task_action,
           $5, priority, schedule_at, $4
    FROM failed
)
-- due_in_ms: the wait by the database's clock, for the subscriber's wake-up.
SELECT state::text AS state, (extract(epoch FROM schedule_at - now()) * 1000)::bigint AS due_in_ms FROM failed
