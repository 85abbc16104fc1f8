-- The events already stored under idempotency keys $2 of stream $1.
SELECT idempotency_key, event_id FROM sluice.gateway_publishes
WHERE stream_id = $1 AND idempotency_key = ANY ($2::text[])
