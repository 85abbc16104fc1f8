-- Removes everything 0003_retention.up.sql created.
DROP INDEX sluice.task_log_age_idx;
ALTER TABLE sluice.consumers DROP COLUMN log_retention, DROP COLUMN dead_retention;
