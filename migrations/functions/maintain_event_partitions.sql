-- revision: 5
-- requires: 14
--
-- sluice.maintain_event_partitions: keeps sluice.events partitioned by
-- transaction id. Called by every subscriber's housekeeping; runs at most
-- every event_partitioning.every (5 s), by one session at a time (an
-- advisory lock), and does nothing (takes no lock) when there is nothing
-- to do.
--
-- 1. Seals the partitions that no transaction can write into any more
--    (their upper bound is below every running transaction's id but this
--    one's, which writes no event).
-- 2. Cuts the partition new transactions write into at the next transaction
--    id, when it has been written into for longer than the partition age
--    (event_partitioning.max_age, never less than a hundredth of the longest
--    event retention) and holds an event, or when it reaches further than
--    one span from here (the span was made shorter). Every transaction
--    still running has a smaller id, so whatever it writes later still
--    falls into the cut partition, which is sealed once they have all
--    ended (at once, when none is running); new transactions write into
--    the partitions after the cut.
--    The partitions made ahead (nobody has written into them) are made
--    again with the current span whenever it changed.
-- 3. Moves rows that landed in the default partition (housekeeping fell
--    behind) into a range partition of their own.
-- 4. Creates partitions ahead: always two spans past the next transaction id.
-- 5. Drops the oldest partitions that nobody needs: sealed longer ago than
--    the longest event retention of any stream, below every consumer's
--    position (every consumer has materialized them), and with no pending
--    (available, scheduled, running, waiting) task of theirs. A lagging or paused
--    consumer holds them back; deleting it lets them go. The events of dead
--    letters and cancelled tasks move into the kept events' partition
--    (events_kept, from 0 to the partitions in place), which is written
--    anew at each drop with the events some task still names: a dead
--    letter can be listed, retried and cancelled for its whole retention.
--    (Completed tasks kept by completed_retention do not keep their events:
--    nothing can be done with them, and there may be millions.)
--
-- SECURITY DEFINER: creating and dropping partitions needs the table owner's
-- rights, which a least-privilege worker role does not have. It takes no
-- input, and its search path is fixed. A lock it cannot have within 100 ms
-- is left for the next run: while it waits, publishers and refills queue
-- behind it, so it must not wait long (autovacuum on a partition, or a
-- transaction that published and is still open, is the usual holder). A
-- cut reads the rows of the partition it cuts (Postgres checks them
-- against the new bound) while it holds the lock: on a database that fills
-- a span before max_age, partitions are never cut by age.
CREATE OR REPLACE FUNCTION sluice.maintain_event_partitions(OUT created integer, OUT dropped integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '100ms'
AS $$
DECLARE
    v_span     bigint;
    v_age      interval;
    v_next     bigint;
    v_top      bigint;
    v_hi       bigint;
    v_max      bigint;
    v_name     text;
    v_keep     interval;
    v_cut      text;
    v_remake   boolean;
    v_written  boolean;
    v_kept_hi  bigint;
    p          record;
BEGIN
    created := 0;
    dropped := 0;
    -- Consumer ids are positive: key 0 is this function's.
    IF NOT pg_try_advisory_xact_lock(1936487781, 0) THEN
        RETURN;
    END IF;
    UPDATE sluice.event_partitioning SET last_run = now() WHERE last_run <= now() - every
    RETURNING span, max_age INTO v_span, v_age;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    -- Sealed: every transaction with a smaller id than the partition's end
    -- has ended (this one aside: it writes no event).
    UPDATE sluice.event_partitions SET sealed_at = now()
    WHERE sealed_at IS NULL AND hi <= pg_snapshot_xmax(pg_current_snapshot())
      AND NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(pg_current_snapshot()) AS running (xid)
                      WHERE running.xid < hi);

    SELECT max(hi::text::bigint) INTO v_top FROM sluice.event_partitions;
    IF v_top IS NULL THEN
        RETURN;
    END IF;
    v_next := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
    -- The age counts from the first run that finds the partition written into.
    UPDATE sluice.event_partitions SET opened_at = now()
    WHERE opened_at IS NULL AND NOT kept AND lo::text::bigint < v_next;
    SELECT coalesce(max(s.event_retention), interval '0') INTO v_keep FROM sluice.streams s;
    v_age := greatest(v_age, v_keep / 100);
    -- The partition new transactions write into, if it is to be cut.
    SELECT c.name INTO v_cut FROM sluice.event_partitions c
    WHERE NOT c.kept AND c.lo::text::bigint < v_next AND v_next < c.hi::text::bigint
      AND (c.hi::text::bigint > v_next + v_span
           OR (c.opened_at <= now() - v_age
               AND EXISTS (SELECT 1 FROM sluice.events e
                           WHERE e.txid >= c.lo AND e.txid < v_next::text::xid8)));
    v_remake := EXISTS (SELECT 1 FROM sluice.event_partitions a
                        WHERE NOT a.kept AND a.lo::text::bigint >= v_next
                          AND a.hi::text::bigint - a.lo::text::bigint <> v_span);
    -- Nothing to change: no lock taken.
    IF v_top >= v_next + 2 * v_span
       AND v_cut IS NULL AND NOT v_remake
       AND NOT EXISTS (SELECT 1 FROM sluice.events_default)
       AND NOT EXISTS (SELECT 1 FROM sluice.event_partitions
                       WHERE sealed_at IS NOT NULL AND NOT kept AND sealed_at <= now() - v_keep)
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
        -- Transactions may have begun while the lock was awaited: cut at the
        -- next transaction id as of now, which is above every running one.
        v_next := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
        SELECT c.name INTO v_cut FROM sluice.event_partitions c
        WHERE NOT c.kept AND c.lo::text::bigint < v_next AND v_next < c.hi::text::bigint
          AND (c.hi::text::bigint > v_next + v_span
               OR (c.opened_at <= now() - v_age
                   AND EXISTS (SELECT 1 FROM sluice.events e
                               WHERE e.txid >= c.lo AND e.txid < v_next::text::xid8)));

        IF v_cut IS NOT NULL OR v_remake THEN
            -- The partitions made ahead, above the cut: nobody has written
            -- into them (checked all the same: a row there keeps them all).
            v_written := false;
            FOR p IN SELECT * FROM sluice.event_partitions
                     WHERE NOT kept AND lo::text::bigint >= v_next LOOP
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM sluice.%I)', p.name) INTO v_written;
                EXIT WHEN v_written;
            END LOOP;
            IF NOT v_written THEN
                FOR p IN SELECT * FROM sluice.event_partitions
                         WHERE NOT kept AND lo::text::bigint >= v_next LOOP
                    EXECUTE format('DROP TABLE sluice.%I', p.name);
                    DELETE FROM sluice.event_partitions WHERE name = p.name;
                END LOOP;
                IF v_cut IS NOT NULL THEN
                    SELECT * INTO p FROM sluice.event_partitions WHERE name = v_cut;
                    EXECUTE format('ALTER TABLE sluice.events DETACH PARTITION sluice.%I', p.name);
                    EXECUTE format('ALTER TABLE sluice.events ATTACH PARTITION sluice.%I FOR VALUES FROM (%L) TO (%L)',
                                   p.name, p.lo, v_next);
                    UPDATE sluice.event_partitions SET hi = v_next::text::xid8 WHERE name = p.name;
                    -- On a quiet database nothing older is still running:
                    -- sealed at once.
                    UPDATE sluice.event_partitions SET sealed_at = now()
                    WHERE name = p.name
                      AND NOT EXISTS (SELECT 1 FROM pg_snapshot_xip(pg_current_snapshot()) AS running (xid)
                                      WHERE running.xid < v_next::text::xid8);
                END IF;
                SELECT max(hi::text::bigint) INTO v_top FROM sluice.event_partitions;
            END IF;
        END IF;

        -- Rows beyond every range partition: give them one of their own.
        SELECT max(txid::text::bigint) INTO v_max FROM sluice.events_default;
        IF v_max IS NOT NULL THEN
            v_name := 'events_' || v_top;
            ALTER TABLE sluice.events DETACH PARTITION sluice.events_default;
            EXECUTE format('ALTER TABLE sluice.events_default RENAME TO %I', v_name);
            EXECUTE format('ALTER TABLE sluice.events ATTACH PARTITION sluice.%I FOR VALUES FROM (%L) TO (%L)',
                           v_name, v_top, v_max + 1);
            CREATE TABLE sluice.events_default PARTITION OF sluice.events DEFAULT;
            INSERT INTO sluice.event_partitions (name, lo, hi, opened_at)
            VALUES (v_name, v_top::text::xid8, (v_max + 1)::text::xid8, now());
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
            INSERT INTO sluice.event_partitions (name, lo, hi, opened_at)
            -- One that starts at the next transaction id (after a cut) is
            -- written into from now on.
            VALUES (v_name, v_top::text::xid8, v_hi::text::xid8, CASE WHEN v_top <= v_next THEN now() END);
            v_top := v_hi;
            created := created + 1;
        END LOOP;

        FOR p IN SELECT * FROM sluice.event_partitions WHERE sealed_at IS NOT NULL AND NOT kept ORDER BY lo LOOP
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
            SELECT k.hi::text::bigint INTO v_kept_hi FROM sluice.event_partitions k WHERE k.kept;
            IF v_kept_hi IS NOT NULL
               OR EXISTS (SELECT 1 FROM sluice.tasks t
                          WHERE t.state IN ('discarded', 'cancelled')
                            AND t.event_txid >= p.lo AND t.event_txid < p.hi)
            THEN
                -- The events kept: of this partition, those of its dead
                -- letters and cancelled tasks (none is pending); of the kept
                -- ones, those any task still names (a dead letter retried
                -- since is pending, or completed).
                CREATE TEMPORARY TABLE sluice_kept_events ON COMMIT DROP AS
                SELECT e.* FROM sluice.events e
                WHERE e.txid >= p.lo AND e.txid < p.hi
                  AND (e.txid, e.id) IN (SELECT t.event_txid, t.event_id FROM sluice.tasks t
                                         WHERE t.state IN ('discarded', 'cancelled')
                                           AND t.event_txid >= p.lo AND t.event_txid < p.hi)
                UNION ALL
                SELECT e.* FROM sluice.events e
                WHERE v_kept_hi IS NOT NULL AND e.txid < v_kept_hi::text::xid8
                  AND EXISTS (SELECT 1 FROM sluice.consumers c JOIN sluice.tasks t ON t.consumer_id = c.id
                              WHERE c.stream_id = e.stream_id AND t.event_id = e.id);
                EXECUTE format('DROP TABLE sluice.%I', p.name);
                DROP TABLE IF EXISTS sluice.events_kept;
                DELETE FROM sluice.event_partitions WHERE name = p.name OR kept;
                IF EXISTS (SELECT 1 FROM pg_temp.sluice_kept_events) THEN
                    EXECUTE format('CREATE TABLE sluice.events_kept PARTITION OF sluice.events FOR VALUES FROM (%L) TO (%L)',
                                   '0', p.hi);
                    INSERT INTO sluice.events OVERRIDING SYSTEM VALUE SELECT * FROM pg_temp.sluice_kept_events;
                    INSERT INTO sluice.event_partitions (name, lo, hi, opened_at, sealed_at, kept)
                    VALUES ('events_kept', '0', p.hi, now(), now(), true);
                END IF;
                DROP TABLE pg_temp.sluice_kept_events;
            ELSE
                EXECUTE format('DROP TABLE sluice.%I', p.name);
                DELETE FROM sluice.event_partitions WHERE name = p.name;
            END IF;
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
