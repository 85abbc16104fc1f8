-- Defers (consumer $1, event $2) held under lease token $3 by worker $4 until $5, or
-- by $6 ms from now (the database's clock) when $5 is null, with priority $7
-- (null keeps the task's own) and reason $8, recorded in the audit log.
-- No row: the attempt does not hold the task.
WITH deferred AS (
    UPDATE sluice.tasks t
    SET state = 'scheduled',
        schedule_at = coalesce($5::timestamptz, now() + $6 * interval '1 millisecond'),
        priority = coalesce($7::int2, t.priority),
        lease_until = NULL,
        worker_id = NULL
    WHERE t.consumer_id = $1 AND t.event_id = $2 AND t.lease_token = $3 AND t.state = 'running'
    RETURNING t.consumer_id, t.event_id, t.attempt, t.priority, t.schedule_at
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority, schedule_at, worker_id)
    SELECT consumer_id, event_id, attempt, 'deferred', $8, priority, schedule_at, $4
    FROM deferred
)
-- due_in_ms: the wait by the database's clock, for the subscriber's wake-up.
SELECT schedule_at, (extract(epoch FROM schedule_at - now()) * 1000)::bigint AS due_in_ms FROM deferred
