-- Retries by hand up to $9 of the tasks the filter selects
-- (task_filter.sql) that are in one of the states $12 (TaskAction::takes:
-- discarded or cancelled), in event id order: available again at the end of the
-- queue (state $11, `available`), attempts reset (their error history
-- kept), logged with reason $10. A keyed task of a consumer ordered by key
-- waits instead, for the refill to give it its key's next turn (it comes
-- before the key's later tasks: they wait in event order).
-- A task whose state changed meanwhile is left alone (the update re-checks
-- it under its row lock). Returns the event ids retried.
, target AS MATERIALIZED (
    SELECT event_id FROM matching WHERE state::text = ANY ($12) ORDER BY event_id LIMIT $9
),
retried AS (
    UPDATE sluice.tasks t
    SET state = CASE WHEN t.key IS NOT NULL AND c.ordered_by_key THEN 'waiting'
                     ELSE $11::text::sluice.task_state END,
        attempt = 0, finished_at = NULL, schedule_at = NULL,
        position = nextval('sluice.event_id')
    FROM sluice.consumers c
    WHERE c.id = t.consumer_id
      AND t.consumer_id = $1 AND t.event_id = ANY (ARRAY(SELECT event_id FROM target))
      AND t.state::text = ANY ($12)
    RETURNING t.consumer_id, t.event_id, t.attempt, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority)
    SELECT consumer_id, event_id, attempt, 'retried', $10, priority FROM retried
),
woken AS (
    SELECT pg_notify('sluice.' || c.stream_id, '') FROM sluice.consumers c
    WHERE c.id = $1 AND EXISTS (SELECT 1 FROM retried)
)
SELECT event_id, (SELECT count(*) FROM woken) AS woken FROM retried ORDER BY event_id
