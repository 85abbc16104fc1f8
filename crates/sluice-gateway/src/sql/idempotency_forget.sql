-- Forgets up to $1 idempotency keys older than a day, skipping any a
-- publish holds.
DELETE FROM sluice.gateway_publishes
WHERE (stream_id, key_id, idempotency_key) IN (
    SELECT stream_id, key_id, idempotency_key FROM sluice.gateway_publishes
    WHERE created_at < now() - interval '1 day'
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
