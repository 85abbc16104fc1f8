-- Idempotency keys belong to the gateway key that published under them
-- (issue 23): per stream alone, one client's key could swallow another
-- client's different event, answered as a duplicate of an event it never
-- published. Rows recorded before this migration get key_id 0 ("some key,
-- before 0015"): they still answer a retry by any key until they are a day
-- old and forgotten, so a publish retried across the upgrade is stored once.
ALTER TABLE sluice.gateway_publishes ADD COLUMN key_id integer NOT NULL DEFAULT 0;
ALTER TABLE sluice.gateway_publishes ALTER COLUMN key_id DROP DEFAULT;
ALTER TABLE sluice.gateway_publishes
    DROP CONSTRAINT gateway_publishes_pkey,
    ADD PRIMARY KEY (stream_id, key_id, idempotency_key);
COMMENT ON COLUMN sluice.gateway_publishes.key_id IS
    'the sluice.gateway_keys id that published under this idempotency key; 0: recorded before migration 0015';
