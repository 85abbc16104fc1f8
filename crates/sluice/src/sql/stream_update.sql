-- Changes the event retention of stream $1 to $2 ms. Returns the stream's
-- id; no row when it does not exist.
UPDATE sluice.streams SET event_retention = $2 * interval '1 millisecond' WHERE name = $1 RETURNING id
