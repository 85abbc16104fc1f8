-- Removes everything 0002_lease_tokens.up.sql created. The runner drops the
-- functions of migrations/functions/ before any down migration runs.
DROP TYPE sluice.claimed_task;
ALTER TABLE sluice.consumers DROP COLUMN start_event;
ALTER TABLE sluice.workers DROP COLUMN dead_after;
ALTER TABLE sluice.tasks DROP COLUMN lease_token;
DROP SEQUENCE sluice.lease_token;
