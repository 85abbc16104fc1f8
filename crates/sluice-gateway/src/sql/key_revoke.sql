-- Revokes gateway key $1 (by name), unless it is revoked already.
UPDATE sluice.gateway_keys SET revoked_at = now()
WHERE name = $1 AND revoked_at IS NULL
RETURNING name, public_key, publish, consume, created_at, revoked_at
