-- Reverts 0013_key_order_by_event_id.up.sql. The v1 functions are not
-- brought back: what comes back under their names only refuses to run (it
-- exists so that 0001's down still finds something to drop).
DROP TRIGGER tasks_key_freed ON sluice.tasks;
CREATE TRIGGER tasks_key_freed AFTER UPDATE OF state ON sluice.tasks
    FOR EACH ROW
    WHEN (OLD.key IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
          AND NEW.state IN ('completed', 'discarded', 'cancelled', 'waiting'))
    EXECUTE FUNCTION sluice.note_freed_key();

CREATE OR REPLACE FUNCTION sluice.note_freed_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO sluice.freed_keys (consumer_id, key) VALUES (OLD.consumer_id, OLD.key);
    RETURN NULL;
END;
$$;

DROP INDEX sluice.events_stream_key_idx;

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.column_privileges
             WHERE table_schema = 'sluice' AND table_name = 'freed_keys' AND column_name = 'key'
               AND privilege_type = 'INSERT' AND grantee <> current_user
    LOOP
        EXECUTE format('REVOKE INSERT (consumer_id, key, held) ON sluice.freed_keys FROM %I', r.grantee);
    END LOOP;
END;
$$;
ALTER TABLE sluice.freed_keys DROP COLUMN held;

CREATE FUNCTION sluice.fetch(p_consumer integer, p_worker uuid, p_lease interval, p_limit integer,
                             p_chunk integer, p_refill boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sluice.fetch was removed by migration 13: subscribers call sluice.fetch_v2'
        USING ERRCODE = 'feature_not_supported';
END;
$$;
CREATE FUNCTION sluice.refill(p_consumer integer, p_limit integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sluice.refill was removed by migration 13: subscribers call sluice.fetch_v2'
        USING ERRCODE = 'feature_not_supported';
END;
$$;
