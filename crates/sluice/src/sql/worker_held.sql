-- How many tasks of consumer $1 are still running under worker $2: at the
-- end of a shutdown, what is left for the rescuer (reported as abandoned).
SELECT count(*) FROM sluice.tasks WHERE consumer_id = $1 AND worker_id = $2 AND state = 'running'
