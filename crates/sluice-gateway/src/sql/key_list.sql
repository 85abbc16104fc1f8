-- Every gateway key, by name.
SELECT name, public_key, publish, consume, created_at, revoked_at
FROM sluice.gateway_keys
ORDER BY name
