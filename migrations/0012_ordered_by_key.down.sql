-- Removes what 0012_ordered_by_key.up.sql added. Waiting tasks become
-- available (their order is no longer kept) or scheduled when not due yet.
UPDATE sluice.tasks
SET state = CASE WHEN schedule_at > now() THEN 'scheduled' ELSE 'available' END::sluice.task_state,
    schedule_at = CASE WHEN schedule_at > now() THEN schedule_at END
WHERE state = 'waiting';
DROP TRIGGER tasks_key_deleted ON sluice.tasks;
DROP TRIGGER tasks_key_freed ON sluice.tasks;
DROP FUNCTION sluice.note_freed_key();
DROP TABLE sluice.freed_keys;
DROP INDEX sluice.tasks_waiting_idx;
DROP INDEX sluice.tasks_key_waiting_idx;
DROP INDEX sluice.tasks_key_busy_idx;
ALTER TABLE sluice.tasks DROP COLUMN key;
ALTER TABLE sluice.consumers
    DROP CONSTRAINT consumers_hold_needs_order,
    DROP COLUMN hold_key_on_dead_letter,
    DROP COLUMN ordered_by_key;
