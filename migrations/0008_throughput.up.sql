-- Tasks completed and attempts failed per consumer per minute, kept for a
-- day: the history behind the dashboard's throughput chart and
-- `sluice::throughput`. Each worker adds what it did since its previous
-- heartbeat to the row of the minute it beats in (no write per task); the
-- heartbeat also forgets its consumer's rows older than a day.
CREATE TABLE sluice.throughput (
    consumer_id integer NOT NULL REFERENCES sluice.consumers (id) ON DELETE CASCADE,
    minute      timestamptz NOT NULL CONSTRAINT throughput_minute_whole CHECK (minute = date_trunc('minute', minute)),
    completed   bigint NOT NULL DEFAULT 0 CONSTRAINT throughput_completed_nonnegative CHECK (completed >= 0),
    failed      bigint NOT NULL DEFAULT 0 CONSTRAINT throughput_failed_nonnegative CHECK (failed >= 0),
    PRIMARY KEY (consumer_id, minute)
);

-- The heartbeat writes it from now on: a role that may write the heartbeat
-- column by column (docs/SECURITY.md) may write this table too, or its
-- workers' heartbeats would fail after the upgrade and their tasks be taken
-- for abandoned.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.column_privileges
             WHERE table_schema = 'sluice' AND table_name = 'workers' AND column_name = 'heartbeat_at'
               AND privilege_type = 'UPDATE' AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE (completed, failed), DELETE ON sluice.throughput TO %I',
                       r.grantee);
    END LOOP;
END;
$$;
