-- Removes what 0007_worker_rates.up.sql added.
ALTER TABLE sluice.workers DROP COLUMN completed_last_minute, DROP COLUMN failed_last_minute;
