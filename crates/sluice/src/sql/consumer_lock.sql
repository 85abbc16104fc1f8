-- Consumer $2 of stream $1, locked for a change of its ordering by key (in
-- the caller's transaction): its id, whether it is paused and its ordering.
-- The lock waits for a refill in progress, and later refills wait for it.
SELECT c.id, c.paused, c.ordered_by_key, c.hold_key_on_dead_letter
FROM sluice.consumers c
JOIN sluice.streams s ON s.id = c.stream_id
WHERE s.name = $1 AND c.name = $2
FOR UPDATE OF c
