-- Cancels the task of consumer $2 of stream $1 for event $3 if it is
-- available or scheduled, with reason $4. Returns the state it had; a state
-- other than available or scheduled means nothing was changed.
WITH target AS (
    SELECT t.consumer_id, t.event_id, t.state FROM sluice.tasks t
    JOIN sluice.consumers c ON c.id = t.consumer_id
    JOIN sluice.streams s ON s.id = c.stream_id
    WHERE s.name = $1 AND c.name = $2 AND t.event_id = $3
    FOR UPDATE OF t
),
cancelled AS (
    UPDATE sluice.tasks t
    SET state = 'cancelled', finished_at = now(), schedule_at = NULL
    FROM target
    WHERE t.consumer_id = target.consumer_id AND t.event_id = target.event_id
      AND target.state IN ('available', 'scheduled')
    RETURNING t.consumer_id, t.event_id, t.attempt, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority)
    SELECT consumer_id, event_id, attempt, 'cancelled', $4, priority FROM cancelled
)
SELECT state::text AS state FROM target
