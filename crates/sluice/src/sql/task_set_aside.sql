-- Sets aside by hand up to $9 of the tasks the filter selects
-- (task_filter.sql) that are in one of the states $12 (TaskAction::takes:
-- available, scheduled or waiting, and for a cancel dead letters the filter
-- names), in event id order, with reason $10: to state $11, `cancelled`
-- (they will not run, or dead letters set aside for good) or `discarded`
-- (dead letters, as a nack(discard) leaves them: kept for the consumer's
-- dead retention and retriable by hand). A keyed task of a consumer ordered
-- by key lets its key's next task go (the tasks_key_freed trigger notes it
-- for the refill). The task log names the same action. A task whose state
-- changed meanwhile (claimed, say) is left alone: the update re-checks it
-- under its row lock. Returns the event ids set aside. The consumer's row
-- is locked (KEY SHARE) before any task, as in task_retry.sql.
, consumer AS MATERIALIZED (
    SELECT c.id FROM sluice.consumers c WHERE c.id = $1 FOR KEY SHARE
),
target AS MATERIALIZED (
    SELECT event_id FROM matching
    WHERE state::text = ANY ($12) AND EXISTS (SELECT 1 FROM consumer)
    ORDER BY event_id LIMIT $9
),
set_aside AS (
    UPDATE sluice.tasks t
    SET state = $11::text::sluice.task_state, finished_at = now(), schedule_at = NULL
    WHERE t.consumer_id = $1 AND t.event_id = ANY (ARRAY(SELECT event_id FROM target))
      AND t.state::text = ANY ($12)
    RETURNING t.consumer_id, t.event_id, t.attempt, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority)
    SELECT consumer_id, event_id, attempt, $11::text::sluice.task_action, $10, priority FROM set_aside
)
SELECT event_id FROM set_aside ORDER BY event_id
