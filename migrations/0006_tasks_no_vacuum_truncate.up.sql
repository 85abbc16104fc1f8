-- VACUUM ends by truncating empty pages off the end of a table, under an
-- ACCESS EXCLUSIVE lock. On sluice.tasks, whose rows all go soon after they
-- come, autovacuum does that again and again, and every claim, ack and
-- refill waits on the lock: sluice-bench soak on a cluster with autovacuum
-- on fell from 45,000 to a few hundred tasks/s in its last windows. The
-- pages stay, for the rows to come.
ALTER TABLE sluice.tasks SET (vacuum_truncate = false);
