-- Creates sluice.events partitions ahead and drops those past retention that
-- nobody needs (see migrations/functions/maintain_event_partitions.sql).
-- Returns how many were created and dropped.
SELECT created, dropped FROM sluice.maintain_event_partitions()
