-- Event retention bounded in time on a quiet database (issue 23), and dead
-- letters that outlive their event's partition.
--
-- 1. A partition is also cut by age: the partition new transactions write
--    into is closed at the current transaction id once it has been written
--    into for max_age (and holds an event), so that a database doing few
--    transactions still drops its events about max_age after retention.
--    The maintenance (migrations/functions/maintain_event_partitions.sql)
--    never makes it shorter than a hundredth of the longest event retention,
--    so at most about a hundred partitions are within retention.
ALTER TABLE sluice.event_partitioning
    ADD COLUMN max_age interval NOT NULL DEFAULT '1 hour'
        CONSTRAINT event_partitioning_max_age_range CHECK (max_age >= interval '1 second'
                                                           AND max_age <= interval '100 years'),
    ADD CONSTRAINT event_partitioning_every_range CHECK (every >= interval '0' AND every <= interval '1 hour');

-- When new transactions began writing into the partition (the maintenance
-- notes it at its first run after); the age above counts from then.
ALTER TABLE sluice.event_partitions ADD COLUMN opened_at timestamptz;
UPDATE sluice.event_partitions
SET opened_at = created_at
WHERE lo < pg_snapshot_xmax(pg_current_snapshot());

-- 2. The kept events' partition (one at most, named events_kept, from 0 up
--    to the partitions still in place): when a partition goes, the events
--    of dead letters and cancelled tasks are copied into it, so that such a
--    task stays visible and can be retried or cancelled for its whole
--    retention. Rewritten at each drop, without the events no task names
--    any more. (Completed tasks kept by completed_retention do not keep
--    their events: they cannot be acted on, and there may be millions.)
ALTER TABLE sluice.event_partitions
    ADD COLUMN kept boolean NOT NULL DEFAULT false;

-- Finds, when a partition goes, the dead letters and cancelled tasks whose
-- events are kept.
CREATE INDEX tasks_set_aside_event_idx ON sluice.tasks (event_txid, event_id)
    WHERE state IN ('discarded', 'cancelled');
