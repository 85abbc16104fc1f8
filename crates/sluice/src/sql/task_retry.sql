-- Retries by hand the task of consumer $2 of stream $1 for event $3 if it
-- is discarded or cancelled: available again at the end of the queue, with
-- its attempts reset (its error history kept), logged with reason $4.
-- Returns the state it had; any other state means nothing was changed.
WITH target AS (
    SELECT t.consumer_id, t.event_id, t.state, t.attempt FROM sluice.tasks t
    JOIN sluice.consumers c ON c.id = t.consumer_id
    JOIN sluice.streams s ON s.id = c.stream_id
    WHERE s.name = $1 AND c.name = $2 AND t.event_id = $3
    FOR UPDATE OF t
),
retried AS (
    UPDATE sluice.tasks t
    SET state = 'available', attempt = 0, finished_at = NULL, schedule_at = NULL,
        position = nextval('sluice.event_id')
    FROM target
    WHERE t.consumer_id = target.consumer_id AND t.event_id = target.event_id
      AND target.state IN ('discarded', 'cancelled')
    RETURNING t.consumer_id, t.event_id, target.attempt, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority)
    SELECT consumer_id, event_id, attempt, 'retried', $4, priority FROM retried
),
woken AS (
    SELECT pg_notify('sluice.' || c.stream_id, '') FROM retried r JOIN sluice.consumers c ON c.id = r.consumer_id
)
SELECT target.state::text AS state, (SELECT count(*) FROM woken) AS woken FROM target
