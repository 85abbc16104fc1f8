-- Back to partitions cut by transaction ids only. A kept events' partition
-- stays as an ordinary partition (the earlier maintenance drops it once no
-- pending task needs it, and its dead letters lose their event as before).
DROP INDEX sluice.tasks_set_aside_event_idx;
ALTER TABLE sluice.event_partitions DROP COLUMN kept, DROP COLUMN opened_at;
ALTER TABLE sluice.event_partitioning
    DROP CONSTRAINT event_partitioning_every_range,
    DROP COLUMN max_age;
