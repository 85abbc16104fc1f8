-- Records the events $3[i] published under idempotency keys $2[i] of
-- gateway key $4 on stream $1.
UPDATE sluice.gateway_publishes p SET event_id = r.event_id
FROM unnest($2::text[], $3::bigint[]) AS r (idempotency_key, event_id)
WHERE p.stream_id = $1 AND p.key_id = $4 AND p.idempotency_key = r.idempotency_key
