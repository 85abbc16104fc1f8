-- Deleting a stream removes its events, consumers and their tasks (cascade).
DELETE FROM sluice.streams WHERE name = $1 RETURNING id
