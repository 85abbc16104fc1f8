-- What housekeeping (maintain.sql, maintain_event_partitions) would do now,
-- without doing it: per consumer, the scheduled tasks due, the running tasks
-- of dead workers or ended leases, the dead workers, and what is past its
-- retention (completed tasks, dead letters, audit-log entries); and, as
-- consumer null, the event partitions that would be dropped (sealed longer
-- ago than the longest event retention, below every consumer's position, no
-- pending task; oldest first, stopping at the first that must stay; the
-- kept events' partition, which holds the events of dead letters and other
-- stored tasks whose partitions went, is never dropped).
SELECT s.name AS stream, c.name AS consumer,
       (SELECT count(*) FROM sluice.tasks d
        WHERE d.consumer_id = c.id AND d.state = 'scheduled' AND d.schedule_at <= now()) AS due,
       (SELECT count(*) FROM sluice.tasks r
        WHERE r.consumer_id = c.id AND r.state = 'running'
          AND NOT EXISTS (SELECT 1 FROM sluice.workers w
                          WHERE w.id = r.worker_id AND w.heartbeat_at >= now() - w.dead_after)
          AND (r.lease_until < now()
               OR EXISTS (SELECT 1 FROM sluice.workers w WHERE w.id = r.worker_id))) AS lost,
       (SELECT count(*) FROM sluice.workers w
        WHERE w.consumer_id = c.id AND w.heartbeat_at < now() - w.dead_after) AS dead_workers,
       (SELECT count(*) FROM sluice.tasks p
        WHERE p.consumer_id = c.id AND p.state IN ('completed', 'discarded', 'cancelled')
          AND p.finished_at < CASE WHEN p.state = 'completed' THEN now() - c.completed_retention
                                   ELSE now() - c.dead_retention END) AS expired_tasks,
       (SELECT count(*) FROM sluice.task_log l
        WHERE l.consumer_id = c.id AND l.created_at < now() - c.log_retention) AS expired_log,
       NULL::bigint AS event_partitions
FROM sluice.consumers c
JOIN sluice.streams s ON s.id = c.stream_id
UNION ALL
SELECT NULL, NULL, 0, 0, 0, 0, 0, count(*) FILTER (WHERE droppable)
FROM (
    SELECT bool_and(
               p.sealed_at <= now() - (SELECT coalesce(max(event_retention), interval '0') FROM sluice.streams)
               AND NOT EXISTS (SELECT 1 FROM sluice.consumers c WHERE pg_snapshot_xmin(c.position) < p.hi)
               AND NOT EXISTS (SELECT 1 FROM sluice.tasks t
                               WHERE t.state IN ('available', 'scheduled', 'running', 'waiting')
                                 AND t.event_txid >= p.lo AND t.event_txid < p.hi))
               OVER (ORDER BY p.lo) AS droppable
    FROM sluice.event_partitions p
    WHERE p.sealed_at IS NOT NULL AND NOT p.kept
) d
ORDER BY 1 NULLS LAST, 2
