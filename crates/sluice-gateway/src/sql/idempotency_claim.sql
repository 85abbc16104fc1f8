-- Claims the idempotency keys $2 of gateway key $3 on stream $1 for a
-- publish under way, in its transaction: returns those that were free (or
-- older than a day), now held with event id 0 until idempotency_record.sql
-- fills it in. A key another transaction holds makes this wait until that
-- one ends: then it is either taken (a duplicate) or free again (the other
-- rolled back). Idempotency keys are the publishing key's own: another
-- gateway key's are no concern of this one (a record from before migration
-- 0015, key 0, still counts for a day).
INSERT INTO sluice.gateway_publishes AS p (stream_id, key_id, idempotency_key, event_id)
SELECT $1, $3, k, 0 FROM unnest($2::text[]) AS k
WHERE NOT EXISTS (SELECT 1 FROM sluice.gateway_publishes l
                  WHERE l.stream_id = $1 AND l.key_id = 0 AND l.idempotency_key = k
                    AND l.created_at >= now() - interval '1 day')
ON CONFLICT (stream_id, key_id, idempotency_key)
DO UPDATE SET event_id = 0, created_at = now() WHERE p.created_at < now() - interval '1 day'
RETURNING idempotency_key
