-- FIFO per key, opt-in per consumer: tasks of events with the same key are
-- handed out one at a time, in event order, across every subscriber.
--
-- Of a key's pending tasks only one, the key's head, is available, running
-- or scheduled; the others are 'waiting' (migration 0011), ordered by event
-- id. The claim reads available tasks only, so it is unchanged: one round
-- trip, no per-key lock, no scan of waiting tasks.
--
-- Only the refill (sluice.fetch_v2, one session per consumer at a time under
-- the consumer's row lock) decides which task of a key runs: a new task
-- waits when its key has a pending task; a key whose head finished gets its
-- next task. Whatever finishes a head (an ack, in the caller's transaction or
-- not, a dead letter, a cancel, a delete) only leaves a note in
-- sluice.freed_keys, by the trigger below: an insert, which never waits for
-- and never blocks anyone, so an open transaction that acked a task holds
-- up nothing but its own key. The refill takes the notes that are committed
-- and moves those keys on.

ALTER TABLE sluice.consumers
    ADD COLUMN ordered_by_key boolean NOT NULL DEFAULT false,
    -- Ordered, and a dead letter holds its key until it is retried or
    -- cancelled (by default a dead letter lets the key's next task go).
    ADD COLUMN hold_key_on_dead_letter boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT consumers_hold_needs_order CHECK (ordered_by_key OR NOT hold_key_on_dead_letter);

-- The event's key, set on the tasks of ordered consumers only: the tasks of
-- other consumers are in none of the indexes below.
ALTER TABLE sluice.tasks ADD COLUMN key text;

-- Is a key busy: its task available, running or scheduled (or a dead letter,
-- where dead letters hold keys). Queries name exactly these states, so that
-- no other partial index (each of one state, read whole) fits them.
CREATE INDEX tasks_key_busy_idx ON sluice.tasks (consumer_id, key, state)
    WHERE key IS NOT NULL AND state IN ('available', 'running', 'scheduled', 'discarded');
-- A key's waiting tasks in event order: which one is next.
CREATE INDEX tasks_key_waiting_idx ON sluice.tasks (consumer_id, key, event_id) WHERE state = 'waiting';
-- Waiting tasks by their event's transaction: an event partition is dropped
-- only when no pending task needs it (sluice.maintain_event_partitions).
CREATE INDEX tasks_waiting_idx ON sluice.tasks (event_txid) WHERE state = 'waiting';

-- Keys whose head finished (or whose tasks changed by hand), for the refill
-- to move on. Many notes for one key are fine; the refill deletes them all.
CREATE TABLE sluice.freed_keys (
    consumer_id integer NOT NULL REFERENCES sluice.consumers (id) ON DELETE CASCADE,
    key         text NOT NULL
);
CREATE INDEX freed_keys_consumer_idx ON sluice.freed_keys (consumer_id);

-- As the table owner: whoever finishes a task (a worker's role, an
-- operator's) needs no grant on the notes. It writes only the finished
-- task's own consumer and key, and its search path is fixed.
CREATE FUNCTION sluice.note_freed_key() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO sluice.freed_keys (consumer_id, key) VALUES (OLD.consumer_id, OLD.key);
    RETURN NULL;
END;
$$;

-- A keyed task finished (completed, dead letter, cancelled) or was made to
-- wait by hand (a retried dead letter waits for its turn).
CREATE TRIGGER tasks_key_freed AFTER UPDATE OF state ON sluice.tasks
    FOR EACH ROW
    WHEN (OLD.key IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
          AND NEW.state IN ('completed', 'discarded', 'cancelled', 'waiting'))
    EXECUTE FUNCTION sluice.note_freed_key();

-- A keyed task deleted before it completed (an ack deletes it, by default).
CREATE TRIGGER tasks_key_deleted AFTER DELETE ON sluice.tasks
    FOR EACH ROW
    WHEN (OLD.key IS NOT NULL AND OLD.state <> 'completed')
    EXECUTE FUNCTION sluice.note_freed_key();

-- The refill writes tasks' keys and takes the notes from now on: a role
-- that may write tasks column by column (docs/SECURITY.md) gets the same on
-- these, or its workers' refills would fail after the upgrade.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT grantee FROM information_schema.column_privileges
             WHERE table_schema = 'sluice' AND table_name = 'tasks' AND column_name = 'lease_token'
               AND privilege_type = 'INSERT' AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT INSERT (key), UPDATE (key) ON sluice.tasks TO %I', r.grantee);
        EXECUTE format('GRANT SELECT, DELETE ON sluice.freed_keys TO %I', r.grantee);
    END LOOP;
END;
$$;
