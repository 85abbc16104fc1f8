-- What each worker did in the last minute, reported with its heartbeat:
-- `sluice stats` sums them per consumer (completions and failures per
-- minute) without a write per task. A worker that stops takes its figures
-- with it when its row goes.
ALTER TABLE sluice.workers
    ADD COLUMN completed_last_minute integer NOT NULL DEFAULT 0
        CONSTRAINT workers_completed_last_minute_nonnegative CHECK (completed_last_minute >= 0),
    ADD COLUMN failed_last_minute integer NOT NULL DEFAULT 0
        CONSTRAINT workers_failed_last_minute_nonnegative CHECK (failed_last_minute >= 0);
