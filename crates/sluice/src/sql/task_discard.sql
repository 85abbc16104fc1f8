-- Dead-letters by hand up to $7 available or scheduled tasks the filter
-- selects (task_filter.sql), in event id order, with reason $8: discarded,
-- as a nack(discard) would, kept for the consumer's dead retention and
-- retriable by hand. A task whose state changed meanwhile is left alone.
-- Returns the event ids discarded.
, target AS MATERIALIZED (
    SELECT event_id FROM matching WHERE state IN ('available', 'scheduled') ORDER BY event_id LIMIT $7
),
discarded AS (
    UPDATE sluice.tasks t
    SET state = 'discarded', finished_at = now(), schedule_at = NULL
    WHERE t.consumer_id = $1 AND t.event_id = ANY (ARRAY(SELECT event_id FROM target))
      AND t.state IN ('available', 'scheduled')
    RETURNING t.consumer_id, t.event_id, t.attempt, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority)
    SELECT consumer_id, event_id, attempt, 'discarded', $8, priority FROM discarded
)
SELECT event_id FROM discarded ORDER BY event_id
