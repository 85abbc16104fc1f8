-- What each worker did in the last minute, reported with its heartbeat:
-- `sluice stats` sums them per consumer (completions and failures per
-- minute) without a write per task. A worker that stops takes its figures
-- with it when its row goes.
ALTER TABLE sluice.workers
    ADD COLUMN completed_last_minute integer NOT NULL DEFAULT 0
        CONSTRAINT workers_completed_last_minute_nonnegative CHECK (completed_last_minute >= 0),
    ADD COLUMN failed_last_minute integer NOT NULL DEFAULT 0
        CONSTRAINT workers_failed_last_minute_nonnegative CHECK (failed_last_minute >= 0);

-- The heartbeat writes them from now on: a role that may write the
-- heartbeat column by column (docs/SECURITY.md) may write these too, or
-- its workers' heartbeats would fail after the upgrade and their tasks be
-- taken for abandoned.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.column_privileges
             WHERE table_schema = 'sluice' AND table_name = 'workers' AND column_name = 'heartbeat_at'
               AND privilege_type = 'UPDATE' AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT UPDATE (completed_last_minute, failed_last_minute) ON sluice.workers TO %I',
                       r.grantee);
    END LOOP;
END;
$$;
