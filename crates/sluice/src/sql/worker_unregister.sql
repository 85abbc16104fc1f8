-- Worker $1 of consumer $2 leaves: its row goes, and the tasks it completed
-- ($3) and attempts that failed ($4) since its last heartbeat are added to
-- this minute's row of sluice.throughput, as a heartbeat adds them.
WITH counted AS (
    INSERT INTO sluice.throughput AS t (consumer_id, minute, completed, failed)
    SELECT $2, date_trunc('minute', now()), $3, $4 WHERE $3 > 0 OR $4 > 0
    ON CONFLICT (consumer_id, minute)
    DO UPDATE SET completed = t.completed + excluded.completed, failed = t.failed + excluded.failed
)
DELETE FROM sluice.workers WHERE id = $1
