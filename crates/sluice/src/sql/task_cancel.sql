-- Cancels up to $7 available or scheduled tasks the filter selects
-- (task_filter.sql), in event id order, with reason $8: they will not run.
-- A task whose state changed meanwhile (claimed, say) is left alone: the
-- update re-checks it under its row lock. Returns the event ids cancelled.
, target AS MATERIALIZED (
    SELECT event_id FROM matching WHERE state IN ('available', 'scheduled') ORDER BY event_id LIMIT $7
),
cancelled AS (
    UPDATE sluice.tasks t
    SET state = 'cancelled', finished_at = now(), schedule_at = NULL
    WHERE t.consumer_id = $1 AND t.event_id = ANY (ARRAY(SELECT event_id FROM target))
      AND t.state IN ('available', 'scheduled')
    RETURNING t.consumer_id, t.event_id, t.attempt, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority)
    SELECT consumer_id, event_id, attempt, 'cancelled', $8, priority FROM cancelled
)
SELECT event_id FROM cancelled ORDER BY event_id
