-- Claims the idempotency keys $2 on stream $1 for a publish under way, in
-- its transaction: returns those that were free (or older than a day), now
-- held with event id 0 until idempotency_record.sql fills it in. A key
-- another transaction holds makes this wait until that one ends: then it is
-- either taken (a duplicate) or free again (the other rolled back).
INSERT INTO sluice.gateway_publishes AS p (stream_id, idempotency_key, event_id)
SELECT $1, k, 0 FROM unnest($2::text[]) AS k
ON CONFLICT (stream_id, idempotency_key)
DO UPDATE SET event_id = 0, created_at = now() WHERE p.created_at < now() - interval '1 day'
RETURNING idempotency_key
