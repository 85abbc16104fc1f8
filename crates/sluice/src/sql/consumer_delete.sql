-- Deleting a consumer removes its tasks, log and workers (cascade).
DELETE FROM sluice.consumers c
USING sluice.streams s
WHERE s.id = c.stream_id AND s.name = $1 AND c.name = $2
RETURNING c.id
