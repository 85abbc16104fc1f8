-- Housekeeping for consumer $1, by one session at a time (advisory lock):
-- promotes due scheduled tasks; frees the running tasks of dead workers
-- (silent for longer than their own dead_after) and of workers that left no
-- row once the tasks' leases have ended; forgets a dead worker once none of
-- its tasks is left; removes completed tasks, dead letters (discarded and
-- cancelled tasks) and audit-log entries past the consumer's retentions.
-- Returns counts, and how long until the next scheduled task is due by the
-- database's clock (so a client clock that is off cannot make it spin).
-- Each step touches at most $2 rows, reads only the partial indexes and
-- skips locked rows, so it costs nearly nothing when idle and never waits.
WITH gate AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(1936487781, $1) AS ok
),
dead AS MATERIALIZED (
    SELECT w.id FROM sluice.workers w
    WHERE w.consumer_id = $1 AND w.heartbeat_at < now() - w.dead_after
      AND (SELECT ok FROM gate)
    FOR UPDATE SKIP LOCKED
),
-- The rows to change are picked (and locked) once, in materialized CTEs, and
-- the updates reach them by primary key: as `IN (subquery)` semi-joins, a
-- stale row estimate made Postgres re-run the locking subquery once per task
-- (1.7 s for 14,595 tasks with 345 running).
due AS MATERIALIZED (
    SELECT d.consumer_id, d.event_id FROM sluice.tasks d
    WHERE d.consumer_id = $1 AND d.state = 'scheduled' AND d.schedule_at <= now()
      AND (SELECT ok FROM gate)
    ORDER BY d.schedule_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
promoted AS (
    UPDATE sluice.tasks t
    SET state = 'available', schedule_at = NULL, position = nextval('sluice.event_id')
    WHERE t.consumer_id = $1 AND t.event_id = ANY (ARRAY(SELECT event_id FROM due))
    RETURNING 1
),
lost AS MATERIALIZED (
    SELECT r.consumer_id, r.event_id FROM sluice.tasks r
    WHERE r.consumer_id = $1 AND r.state = 'running'
      AND (r.worker_id IN (SELECT id FROM dead)
           OR (r.lease_until < now()
               AND NOT EXISTS (SELECT 1 FROM sluice.workers w
                               WHERE w.id = r.worker_id AND w.heartbeat_at >= now() - w.dead_after)))
      AND (SELECT ok FROM gate)
    LIMIT $2
    FOR UPDATE OF r SKIP LOCKED
),
expired AS (
    UPDATE sluice.tasks t
    SET state = CASE WHEN t.attempt >= c.max_attempts THEN 'discarded' ELSE 'available' END::sluice.task_state,
        finished_at = CASE WHEN t.attempt >= c.max_attempts THEN now() END,
        lease_until = NULL,
        worker_id = NULL,
        errors = t.errors || jsonb_build_array(jsonb_build_object(
            'attempt', t.attempt, 'at', now(), 'worker', t.worker_id,
            'error', CASE WHEN t.worker_id IN (SELECT id FROM dead) THEN 'worker stopped responding'
                          ELSE 'lease expired' END))
    FROM sluice.consumers c
    WHERE c.id = t.consumer_id
      AND t.consumer_id = $1 AND t.event_id = ANY (ARRAY(SELECT event_id FROM lost))
    RETURNING t.consumer_id, t.event_id, t.attempt, t.state, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority)
    SELECT consumer_id, event_id, attempt,
           CASE WHEN state = 'discarded' THEN 'discarded' ELSE 'lease_expired' END::sluice.task_action,
           CASE WHEN state = 'discarded' THEN 'lease expired on the last attempt' ELSE 'lease expired' END,
           priority
    FROM expired
),
-- A dead worker is forgotten only once this run frees the last of its tasks:
-- forgotten earlier, the rest would wait out their whole lease.
forgotten AS (
    DELETE FROM sluice.workers w
    WHERE w.id IN (SELECT id FROM dead)
      AND NOT EXISTS (SELECT 1 FROM sluice.tasks r
                      WHERE r.consumer_id = $1 AND r.state = 'running' AND r.worker_id = w.id
                        AND r.event_id <> ALL (ARRAY(SELECT event_id FROM lost)))
    RETURNING 1
),
retention AS MATERIALIZED (
    SELECT now() - c.completed_retention AS completed, now() - c.dead_retention AS dead,
           now() - c.log_retention AS log
    FROM sluice.consumers c WHERE c.id = $1
),
-- The consumer's row, locked (KEY SHARE) before the purge locks any task,
-- and only when there is something to purge (a lock is a write: taken on
-- every run it made each idle run commit to disk, and the drain and the
-- latency measurably slower). Deleting a keyed dead letter notes its key (a
-- trigger), whose foreign-key check takes the same lock, and a change of
-- the ordering holds the row (FOR UPDATE) while it rewrites finished tasks:
-- taken after the tasks, it deadlocked with that change. Skipped when the
-- row is held; the purge waits for the next run.
purging AS MATERIALIZED (
    SELECT true AS ok FROM sluice.consumers c
    WHERE c.id = $1
      AND EXISTS (SELECT 1 FROM sluice.tasks p, retention r
                  WHERE p.consumer_id = $1 AND p.state IN ('completed', 'discarded', 'cancelled')
                    AND p.finished_at < greatest(r.completed, r.dead))
    FOR KEY SHARE OF c SKIP LOCKED
),
old AS MATERIALIZED (
    SELECT p.consumer_id, p.event_id FROM sluice.tasks p, retention r
    WHERE p.consumer_id = $1 AND p.state IN ('completed', 'discarded', 'cancelled')
      AND p.finished_at < greatest(r.completed, r.dead)
      AND p.finished_at < CASE WHEN p.state = 'completed' THEN r.completed ELSE r.dead END
      AND (SELECT ok FROM gate) AND EXISTS (SELECT 1 FROM purging)
    LIMIT $2
    FOR UPDATE OF p SKIP LOCKED
),
purged AS (
    DELETE FROM sluice.tasks t
    WHERE t.consumer_id = $1 AND t.event_id = ANY (ARRAY(SELECT event_id FROM old))
    RETURNING 1
),
-- Nothing else locks log entries, and the gate keeps purges one at a time.
old_log AS MATERIALIZED (
    SELECT l.id FROM sluice.task_log l, retention r
    WHERE l.consumer_id = $1 AND l.created_at < r.log
      AND (SELECT ok FROM gate)
    LIMIT $2
),
log_purged AS (
    DELETE FROM sluice.task_log l WHERE l.id = ANY (ARRAY(SELECT id FROM old_log))
    RETURNING 1
),
woken AS (
    -- Tasks came back: wake every subscriber of the stream.
    SELECT pg_notify('sluice.' || c.stream_id, '') FROM sluice.consumers c
    WHERE c.id = $1 AND (EXISTS (SELECT 1 FROM promoted) OR EXISTS (SELECT 1 FROM expired))
)
SELECT (SELECT count(*) FROM promoted) AS promoted,
       (SELECT count(*) FROM expired) AS expired,
       -- Of those, the ones on their last attempt: dead letters, not rescued.
       (SELECT count(*) FROM expired WHERE state = 'discarded') AS expired_discarded,
       (SELECT count(*) FROM forgotten) AS forgotten,
       (SELECT count(*) FROM purged) AS purged,
       (SELECT count(*) FROM log_purged) AS log_purged,
       (SELECT count(*) FROM woken) AS woken,
       -- A full batch means more is waiting: run again at once.
       (SELECT count(*) FROM due) >= $2 OR (SELECT count(*) FROM lost) >= $2
           OR (SELECT count(*) FROM old) >= $2 OR (SELECT count(*) FROM old_log) >= $2 AS more,
       -- How long until the next scheduled task falls due, by this server's clock.
       (SELECT (extract(epoch FROM min(n.schedule_at) - now()) * 1000)::bigint
        FROM sluice.tasks n WHERE n.consumer_id = $1 AND n.state = 'scheduled') AS next_due_ms
