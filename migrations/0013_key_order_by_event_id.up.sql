-- FIFO per key in event id order, whatever the transaction ids; hand steering
-- that gives a task its key; and the v1 claim functions gone.
--
-- 1. The v1 functions sluice.fetch and sluice.refill (migration 0001) are no
--    longer called by anything Sluice ships. They bypassed FIFO per key,
--    ignored a consumer's start_event (a replay re-ran completed events) and
--    claimed again without a new lease token, so a stale holder could ack
--    the new attempt. Everything runs through sluice.fetch_v2.
DROP FUNCTION sluice.refill(integer, integer);
DROP FUNCTION sluice.fetch(integer, uuid, interval, integer, integer, boolean);

-- 2. A stream's keyed events by key, in the order the refill reads a window
--    ((txid, id)): does a key still have events in the part of the window
--    not yet read? (sluice.fetch_v2). Keyless events are not in it, so
--    publishing them costs nothing more.
CREATE INDEX events_stream_key_idx ON sluice.events (stream_id, key, txid, id) WHERE key IS NOT NULL;

-- 3. A task that gains a key as it changes state (a dead letter of the time
--    before the consumer was ordered, retried by hand: it takes its event's
--    key and waits for its turn) leaves a note too, with its new key.
CREATE OR REPLACE FUNCTION sluice.note_freed_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO sluice.freed_keys (consumer_id, key) VALUES (OLD.consumer_id, OLD.key);
    ELSE
        INSERT INTO sluice.freed_keys (consumer_id, key) VALUES (NEW.consumer_id, coalesce(NEW.key, OLD.key));
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER tasks_key_freed ON sluice.tasks;
CREATE TRIGGER tasks_key_freed AFTER UPDATE OF state ON sluice.tasks
    FOR EACH ROW
    WHEN (coalesce(NEW.key, OLD.key) IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
          AND NEW.state IN ('completed', 'discarded', 'cancelled', 'waiting'))
    EXECUTE FUNCTION sluice.note_freed_key();

-- 4. The refill notes the keys it holds back for events of a window not read
--    yet (held: looked at again once the window is read, not at every
--    refill): a role that may take the notes (granted by 0012,
--    docs/SECURITY.md) may now write them too, or its workers' refills would
--    fail.
ALTER TABLE sluice.freed_keys ADD COLUMN held boolean NOT NULL DEFAULT false;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.role_table_grants
             WHERE table_schema = 'sluice' AND table_name = 'freed_keys' AND privilege_type = 'DELETE'
               AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT INSERT (consumer_id, key, held) ON sluice.freed_keys TO %I', r.grantee);
    END LOOP;
END;
$$;
