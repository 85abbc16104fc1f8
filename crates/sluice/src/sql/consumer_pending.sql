-- How many tasks of consumer $1 are pending (not yet completed, discarded or
-- cancelled). Run after consumer_lock.sql, so that it sees every task the
-- last refill made.
SELECT count(*) FROM sluice.tasks
WHERE consumer_id = $1 AND state IN ('available', 'scheduled', 'running', 'waiting')
