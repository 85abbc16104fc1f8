-- The workers (subscribers) of stream $1 (every stream when null; only of
-- consumer $2 when not null), with their status (gone once silent past their
-- dead_after, whatever they last said), how long since their last
-- heartbeat, the tasks they hold and what they did in the last minute.
SELECT w.id, s.name AS stream, c.name AS consumer, w.host, w.pid,
       CASE WHEN w.heartbeat_at < now() - w.dead_after THEN 'gone' ELSE w.status::text END AS status,
       w.started_at, w.heartbeat_at,
       (extract(epoch FROM now() - w.heartbeat_at) * 1000)::bigint AS heartbeat_age_ms,
       (SELECT count(*) FROM sluice.tasks t
        WHERE t.consumer_id = w.consumer_id AND t.state = 'running' AND t.worker_id = w.id) AS tasks_held,
       w.completed_last_minute, w.failed_last_minute
FROM sluice.workers w
JOIN sluice.consumers c ON c.id = w.consumer_id
JOIN sluice.streams s ON s.id = c.stream_id
WHERE ($1::text IS NULL OR s.name = $1) AND ($2::text IS NULL OR c.name = $2)
ORDER BY s.name, c.name, w.started_at, w.id
