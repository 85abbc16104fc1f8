-- The key a client presents at login, by its public key $1.
SELECT id, name, publish, consume, revoked_at IS NOT NULL AS revoked
FROM sluice.gateway_keys
WHERE public_key = $1
