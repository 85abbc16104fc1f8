-- Every consumer's id, with its stream's name and its own, by stream and name.
SELECT c.id, s.name AS stream, c.name FROM sluice.consumers c JOIN sluice.streams s ON s.id = c.stream_id
ORDER BY s.name, c.name
