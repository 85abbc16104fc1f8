-- The audit log of one task of consumer $2 of stream $1, oldest first.
SELECT l.attempt, l.action::text AS action, l.reason, l.priority, l.schedule_at, l.worker_id, l.created_at
FROM sluice.task_log l
JOIN sluice.consumers c ON c.id = l.consumer_id
JOIN sluice.streams s ON s.id = c.stream_id
WHERE s.name = $1 AND c.name = $2 AND l.event_id = $3
ORDER BY l.id
