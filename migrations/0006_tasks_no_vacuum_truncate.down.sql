-- Removes what 0006_tasks_no_vacuum_truncate.up.sql set.
ALTER TABLE sluice.tasks RESET (vacuum_truncate);
