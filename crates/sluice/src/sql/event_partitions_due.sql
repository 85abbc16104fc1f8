-- Makes the event partitions' housekeeping due now, for `sluice cleanup`:
-- maintain_event_partitions otherwise runs at most every few seconds.
UPDATE sluice.event_partitioning SET last_run = '-infinity'
