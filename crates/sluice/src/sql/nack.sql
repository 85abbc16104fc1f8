-- Nacks (consumer $1, event $2) held under lease token $3 by worker $4: $5 'discard'
-- dead-letters it; 'start' requeues it before everything queued (a negative
-- position), 'end' after everything queued now. A requeue counts as an
-- attempt: on the last one the task is discarded instead. The reason $6 joins
-- the task's errors and the audit log; a requeue notifies the stream's
-- subscribers. No row: the attempt does not hold the task.
WITH nacked AS (
    UPDATE sluice.tasks t
    SET state = CASE WHEN $5 = 'discard' OR t.attempt >= c.max_attempts THEN 'discarded'
                     ELSE 'available' END::sluice.task_state,
        position = CASE WHEN $5 = 'start' THEN -nextval('sluice.event_id')
                        ELSE nextval('sluice.event_id') END,
        finished_at = CASE WHEN $5 = 'discard' OR t.attempt >= c.max_attempts THEN now() END,
        lease_until = NULL,
        worker_id = NULL,
        errors = t.errors || jsonb_build_array(jsonb_build_object(
            'attempt', t.attempt, 'at', now(), 'error', coalesce($6::text, 'nack'), 'nack', $5::text,
            'worker', $4::uuid))
    FROM sluice.consumers c
    WHERE c.id = t.consumer_id
      AND t.consumer_id = $1 AND t.event_id = $2 AND t.lease_token = $3 AND t.state = 'running'
    RETURNING t.consumer_id, t.event_id, t.attempt, t.state, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority, worker_id)
    SELECT consumer_id, event_id, attempt,
           CASE WHEN state = 'discarded' THEN 'discarded'
                WHEN $5 = 'start' THEN 'requeued_start'
                ELSE 'requeued_end' END::sluice.task_action,
           $6, priority, $4
    FROM nacked
),
woken AS (
    -- A requeued task is available again: wake the stream's subscribers
    -- (this one's too), which may be waiting for news with room to spare.
    SELECT pg_notify('sluice.' || c.stream_id, '') FROM sluice.consumers c
    WHERE c.id = $1 AND EXISTS (SELECT 1 FROM nacked WHERE state = 'available')
)
-- (woken is read so that it runs: a CTE that nothing reads is skipped.)
SELECT state::text AS state FROM nacked WHERE (SELECT count(*) FROM woken) >= 0
