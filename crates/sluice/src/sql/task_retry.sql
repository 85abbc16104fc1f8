-- Retries by hand up to $9 of the tasks the filter selects
-- (task_filter.sql) that are in one of the states $12 (TaskAction::takes:
-- discarded or cancelled), in event id order: available again at the end of the
-- queue (state $11, `available`), attempts reset (their error history
-- kept), logged with reason $10. Of a consumer ordered by key, a task whose
-- event has a key takes that key (a dead letter of the time before the
-- consumer was ordered has none) and waits, for the refill to give it its
-- key's next turn (it comes before the key's later tasks: they wait in
-- event order; the tasks_key_freed trigger notes the key).
-- A task whose state changed meanwhile is left alone (the update re-checks
-- it under its row lock). Returns the event ids retried.
--
-- The consumer's row is locked (KEY SHARE) before any task: the lock order
-- of the refill and of a change of the ordering (consumer_set_order.sql),
-- which hold the row and then write tasks. Taken after the tasks (by the
-- foreign-key checks of the log and the key notes), it deadlocked with
-- them. Its setting is read from the locked row: the newest, should a
-- change of the ordering commit while this statement waits for it.
, consumer AS MATERIALIZED (
    SELECT c.id, c.stream_id, c.ordered_by_key FROM sluice.consumers c WHERE c.id = $1 FOR KEY SHARE
),
target AS MATERIALIZED (
    SELECT event_id FROM matching
    WHERE state::text = ANY ($12) AND EXISTS (SELECT 1 FROM consumer)
    ORDER BY event_id LIMIT $9
),
retried AS (
    UPDATE sluice.tasks t
    SET state = CASE WHEN c.ordered_by_key AND e.key IS NOT NULL THEN 'waiting'
                     ELSE $11::text::sluice.task_state END,
        key = CASE WHEN c.ordered_by_key THEN e.key END,
        attempt = 0, finished_at = NULL, schedule_at = NULL,
        position = nextval('sluice.event_id')
    FROM consumer c, sluice.events e
    WHERE e.txid = t.event_txid AND e.id = t.event_id
      AND t.consumer_id = $1 AND t.event_id = ANY (ARRAY(SELECT event_id FROM target))
      AND t.state::text = ANY ($12)
    RETURNING t.consumer_id, t.event_id, t.attempt, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority)
    SELECT consumer_id, event_id, attempt, 'retried', $10, priority FROM retried
),
woken AS (
    SELECT pg_notify('sluice.' || c.stream_id, '') FROM consumer c
    WHERE EXISTS (SELECT 1 FROM retried)
)
SELECT event_id, (SELECT count(*) FROM woken) AS woken FROM retried ORDER BY event_id
