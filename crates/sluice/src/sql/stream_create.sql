-- Creates a stream unless one of that name exists. Returns the row only when
-- this call created it.
INSERT INTO sluice.streams (name, event_retention)
VALUES ($1, $2 * interval '1 millisecond')
ON CONFLICT (name) DO NOTHING
RETURNING id, name, (extract(epoch FROM event_retention) * 1000)::bigint AS event_retention_ms, created_at
