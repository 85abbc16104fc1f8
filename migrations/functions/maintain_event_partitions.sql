-- revision: 4
-- requires: 12
--
-- sluice.maintain_event_partitions: keeps sluice.events partitioned by
-- transaction id. Called by every subscriber's housekeeping; runs at most
-- every event_partitioning.every (5 s), by one session at a time (an
-- advisory lock), and does nothing
-- when there is nothing to do.
--
-- 1. Seals the partitions that no transaction can write into any more
--    (their upper bound is below every running transaction's id).
-- 2. Moves rows that landed in the default partition (housekeeping fell
--    behind) into a range partition of their own.
-- 3. Creates partitions ahead: always two spans past the next transaction id.
-- 4. Drops the oldest partitions that nobody needs: sealed longer ago than
--    the longest event retention of any stream, below every consumer's
--    position (every consumer has materialized them), and with no pending
--    (available, scheduled, running, waiting) task of theirs. A lagging or paused
--    consumer holds them back; deleting it lets them go.
--
-- SECURITY DEFINER: creating and dropping partitions needs the table owner's
-- rights, which a least-privilege worker role does not have. It takes no
-- input, and its search path is fixed. A lock it cannot have within 100 ms
-- is left for the next run: while it waits, publishers and refills queue
-- behind it, so it must not wait long (autovacuum on a partition is the
-- usual holder).
CREATE OR REPLACE FUNCTION sluice.maintain_event_partitions(OUT created integer, OUT dropped integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
AS $$
DECLARE
    v_span     bigint;
    v_next     bigint;
    v_top      bigint;
    v_hi       bigint;
    v_max      bigint;
    v_name     text;
    v_keep     interval;
    p          record;
BEGIN
    created := 0;
    dropped := 0;
    -- Consumer ids are positive: key 0 is this function's.
    IF NOT pg_try_advisory_xact_lock(1936487781, 0) THEN
        RETURN;
    END IF;
    UPDATE sluice.event_partitioning SET last_run = now() WHERE last_run <= now() - every
    RETURNING span INTO v_span;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    UPDATE sluice.event_partitions SET sealed_at = now()
    WHERE sealed_at IS NULL AND hi <= pg_snapshot_xmin(pg_current_snapshot());

    SELECT max(hi::text::bigint) INTO v_top FROM sluice.event_partitions;
    IF v_top IS NULL THEN
        RETURN;
    END IF;
    v_next := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
    SELECT coalesce(max(s.event_retention), interval '0') INTO v_keep FROM sluice.streams s;
    -- Nothing to change: no lock taken.
    IF v_top >= v_next + 2 * v_span
       AND NOT EXISTS (SELECT 1 FROM sluice.events_default)
       AND NOT EXISTS (SELECT 1 FROM sluice.event_partitions
                       WHERE sealed_at IS NOT NULL AND sealed_at <= now() - v_keep)
    THEN
        RETURN;
    END IF;

    BEGIN
        -- Publishers lock sluice.streams (their stream's row, and the events'
        -- foreign key), then sluice.events, then a partition: so does this,
        -- since partition DDL changes the foreign key's triggers on streams,
        -- or the two could deadlock. They wait the few milliseconds it takes,
        -- at most the lock timeout.
        LOCK TABLE sluice.streams, sluice.events IN ACCESS EXCLUSIVE MODE;

        -- Rows beyond every range partition: give them one of their own.
        SELECT max(txid::text::bigint) INTO v_max FROM sluice.events_default;
        IF v_max IS NOT NULL THEN
            v_name := 'events_' || v_top;
            ALTER TABLE sluice.events DETACH PARTITION sluice.events_default;
            EXECUTE format('ALTER TABLE sluice.events_default RENAME TO %I', v_name);
            EXECUTE format('ALTER TABLE sluice.events ATTACH PARTITION sluice.%I FOR VALUES FROM (%L) TO (%L)',
                           v_name, v_top, v_max + 1);
            CREATE TABLE sluice.events_default PARTITION OF sluice.events DEFAULT;
            INSERT INTO sluice.event_partitions (name, lo, hi)
            VALUES (v_name, v_top::text::xid8, (v_max + 1)::text::xid8);
            v_top := v_max + 1;
            created := created + 1;
        END IF;
        -- Two spans ahead of the next transaction id. After a long pause the
        -- first one also covers the gap up to the present.
        WHILE v_top < v_next + 2 * v_span LOOP
            v_hi := greatest(v_top, v_next) + v_span;
            v_name := 'events_' || v_top;
            EXECUTE format('CREATE TABLE sluice.%I PARTITION OF sluice.events FOR VALUES FROM (%L) TO (%L)',
                           v_name, v_top, v_hi);
            INSERT INTO sluice.event_partitions (name, lo, hi)
            VALUES (v_name, v_top::text::xid8, v_hi::text::xid8);
            v_top := v_hi;
            created := created + 1;
        END LOOP;

        FOR p IN SELECT * FROM sluice.event_partitions WHERE sealed_at IS NOT NULL ORDER BY lo LOOP
            EXIT WHEN p.sealed_at > now() - v_keep;
            EXIT WHEN EXISTS (SELECT 1 FROM sluice.consumers c WHERE pg_snapshot_xmin(c.position) < p.hi);
            -- Each test reads one partial index of pending tasks.
            EXIT WHEN EXISTS (SELECT 1 FROM sluice.tasks t
                              WHERE t.state = 'available' AND t.event_txid >= p.lo AND t.event_txid < p.hi);
            EXIT WHEN EXISTS (SELECT 1 FROM sluice.tasks t
                              WHERE t.state = 'scheduled' AND t.event_txid >= p.lo AND t.event_txid < p.hi);
            EXIT WHEN EXISTS (SELECT 1 FROM sluice.tasks t
                              WHERE t.state = 'running' AND t.event_txid >= p.lo AND t.event_txid < p.hi);
            EXIT WHEN EXISTS (SELECT 1 FROM sluice.tasks t
                              WHERE t.state = 'waiting' AND t.event_txid >= p.lo AND t.event_txid < p.hi);
            EXECUTE format('DROP TABLE sluice.%I', p.name);
            DELETE FROM sluice.event_partitions WHERE name = p.name;
            dropped := dropped + 1;
        END LOOP;
    EXCEPTION WHEN lock_not_available OR check_violation THEN
        -- Busy publishers, or a write into a range just being made: next
        -- time (everything of this block is undone).
        created := 0;
        dropped := 0;
    END;
END;
$$;
