-- Whether key $1 (by id) may still be used: it exists and is not revoked.
SELECT EXISTS (SELECT 1 FROM sluice.gateway_keys WHERE id = $1 AND revoked_at IS NULL)
