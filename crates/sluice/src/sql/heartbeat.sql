-- Worker $1 of consumer $2 is alive, with status $3, and holds the tasks of
-- lease tokens $4. Liveness is the worker's row alone: the tasks a live
-- worker holds are never rewritten to prove it, so a handler's transaction
-- at any isolation level can settle its task however long it runs.
--
-- A task running under this worker's name but not among those it holds was
-- claimed by a fetch whose answer never reached the worker (a timeout, a
-- broken connection), or its ack or failure could not be written: it goes
-- back to the queue with its attempt given back, and is never a dead letter
-- for it. Only once its lease ended more than $5 ms ago (the longest a call
-- of the worker may take): a fetch still on its way, or this statement
-- waiting for a connection, must not make a task just claimed look
-- abandoned. Giving the attempt back is right for the lost answer (no
-- handler started: with max_attempts 1 such a task would otherwise be a
-- dead letter that never ran) and for an ack that could not be written (the
-- handler succeeded; its success is no failed attempt). Only a failure the
-- executor could not record after its retries loses its count, and runs
-- again as the same attempt.
--
-- $6 and $7: the tasks the worker completed and the attempts that failed in
-- the last minute (rates.rs), for `sluice stats`. $8 and $9: those since its
-- previous heartbeat, added to this minute's row of sluice.throughput (the
-- dashboard's chart); rows of the consumer older than a day are forgotten,
-- skipping any another worker is writing.
--
-- registered 0: another subscriber took the worker for dead and forgot it.
WITH beat AS (
    UPDATE sluice.workers
    SET heartbeat_at = now(), status = $3::text::sluice.worker_status,
        completed_last_minute = $6, failed_last_minute = $7
    WHERE id = $1
    RETURNING 1
),
counted AS (
    INSERT INTO sluice.throughput AS t (consumer_id, minute, completed, failed)
    SELECT $2, date_trunc('minute', now()), $8, $9 WHERE $8 > 0 OR $9 > 0
    ON CONFLICT (consumer_id, minute)
    DO UPDATE SET completed = t.completed + excluded.completed, failed = t.failed + excluded.failed
),
stale AS MATERIALIZED (
    SELECT minute FROM sluice.throughput
    WHERE consumer_id = $2 AND minute < now() - interval '1 day'
    FOR UPDATE SKIP LOCKED
),
forgotten AS (
    DELETE FROM sluice.throughput WHERE consumer_id = $2 AND minute IN (SELECT minute FROM stale)
),
stray AS MATERIALIZED (
    SELECT t.consumer_id, t.event_id FROM sluice.tasks t
    WHERE t.consumer_id = $2 AND t.state = 'running'
      AND t.lease_until < now() - $5 * interval '1 millisecond'
      AND t.worker_id = $1 AND NOT (t.lease_token = ANY ($4::bigint[]))
    FOR UPDATE SKIP LOCKED
),
returned AS (
    UPDATE sluice.tasks t
    SET state = 'available', attempt = greatest(t.attempt - 1, 0), lease_until = NULL, worker_id = NULL
    FROM stray s
    WHERE t.consumer_id = s.consumer_id AND t.event_id = s.event_id
    RETURNING t.consumer_id, t.event_id, t.attempt, t.priority
),
logged AS (
    INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority, worker_id)
    SELECT consumer_id, event_id, attempt, 'released', 'no longer held by its worker (attempt given back)',
           priority, $1
    FROM returned
)
SELECT (SELECT count(*) FROM beat) AS registered, (SELECT count(*) FROM returned) AS returned
