-- Gateway key $1, by name.
SELECT name, public_key, publish, consume, created_at, revoked_at
FROM sluice.gateway_keys
WHERE name = $1
