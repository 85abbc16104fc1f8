-- A page of the tasks the filter selects (task_filter.sql), by event id,
-- at most $9.
SELECT event_id, state::text AS state, priority, attempt, schedule_at, lease_until, worker_id,
       errors::text AS errors, created_at, finished_at, subject
FROM matching
ORDER BY event_id
LIMIT $9
