-- Removes what 0009_gateway.up.sql added: every gateway key and idempotency key.
DROP TABLE sluice.gateway_publishes;
DROP TABLE sluice.gateway_keys;
