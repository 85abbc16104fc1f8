-- Retention of what is not completed work: dead letters (discarded and
-- cancelled tasks) and the audit log, per consumer. Housekeeping removes
-- them past their retention, in bounded batches (maintain.sql).

ALTER TABLE sluice.consumers
    ADD COLUMN dead_retention interval NOT NULL DEFAULT '7 days'
        CONSTRAINT consumers_dead_retention_positive CHECK (dead_retention > interval '0'),
    ADD COLUMN log_retention interval NOT NULL DEFAULT '30 days'
        CONSTRAINT consumers_log_retention_positive CHECK (log_retention > interval '0');

-- The log purge: a consumer's entries by age.
CREATE INDEX task_log_age_idx ON sluice.task_log (consumer_id, created_at);
