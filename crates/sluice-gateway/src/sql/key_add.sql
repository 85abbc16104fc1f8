-- Registers gateway key $1 (name) with public key $2 (32 bytes), the
-- streams $3 it may publish to and the consumers $4 (`stream/consumer`) it
-- may take tasks from.
INSERT INTO sluice.gateway_keys (name, public_key, publish, consume)
VALUES ($1, $2, $3, $4)
RETURNING name, public_key, publish, consume, created_at, revoked_at
