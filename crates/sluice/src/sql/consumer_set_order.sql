-- Sets the ordering by key of consumer $1 (locked, paused, nothing pending:
-- see consumer_lock.sql): ordered $2, holding keys on dead letters $3. The
-- keys of its finished tasks are forgotten, with the notes about them: a
-- dead letter retried later runs as the new setting says for new tasks.
WITH forgotten AS (
    UPDATE sluice.tasks SET key = NULL WHERE consumer_id = $1 AND key IS NOT NULL
),
notes AS (
    DELETE FROM sluice.freed_keys WHERE consumer_id = $1
)
UPDATE sluice.consumers
SET ordered_by_key = $2, hold_key_on_dead_letter = $3, updated_at = now()
WHERE id = $1
