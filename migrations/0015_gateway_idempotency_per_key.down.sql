-- Removes what 0015_gateway_idempotency_per_key.up.sql added: idempotency
-- keys are per stream again. Where two keys used one idempotency key on a
-- stream, the earliest record is kept (a retry by either key is answered
-- with that event, as before 0015).
DELETE FROM sluice.gateway_publishes p
USING sluice.gateway_publishes q
WHERE p.stream_id = q.stream_id AND p.idempotency_key = q.idempotency_key
  AND (p.created_at, p.key_id) > (q.created_at, q.key_id);
ALTER TABLE sluice.gateway_publishes
    DROP CONSTRAINT gateway_publishes_pkey,
    ADD PRIMARY KEY (stream_id, idempotency_key);
ALTER TABLE sluice.gateway_publishes DROP COLUMN key_id;
