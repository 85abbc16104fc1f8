-- Removes everything 0004_task_event_txid.up.sql created.
DROP TRIGGER tasks_event_txid ON sluice.tasks;
DROP FUNCTION sluice.task_event_txid();
ALTER TABLE sluice.tasks DROP COLUMN event_txid;
