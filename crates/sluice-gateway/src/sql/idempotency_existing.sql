-- The events already stored under idempotency keys $2 of gateway key $3 on
-- stream $1 (or, recorded before migration 0015, of any key: key 0).
SELECT DISTINCT ON (idempotency_key) idempotency_key, event_id FROM sluice.gateway_publishes
WHERE stream_id = $1 AND key_id IN ($3, 0) AND idempotency_key = ANY ($2::text[])
ORDER BY idempotency_key, key_id DESC
