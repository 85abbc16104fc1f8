-- revision: 9
-- requires: 12
--
-- sluice.fetch_v2: the subscriber's one round trip. Moves consumer
-- p_consumer's position forward and claims up to p_limit tasks for worker
-- p_worker, each with a fresh lease token and a lease of p_lease.
--
-- Applied by the migration runner whenever this file changes, unless a newer
-- revision (above) is applied: a released change raises the revision. A change of
-- signature or meaning gets a new name (fetch_v3), so that old and new
-- workers can run side by side during a deploy. It needs migrations 2 (lease
-- tokens), 4 (tasks name their event's txid) and 12 (FIFO per key), and is
-- dropped when one of them is reverted.
--
-- The window is every event whose transaction is visible in the current
-- snapshot but was not in the stored position. Only transactions in progress
-- at the position (its xip) or started after it (>= its xmax) can hold such
-- events, so the scan follows new events, not the age of the oldest open
-- transaction. A window larger than one call is worked through in (txid, id)
-- order, remembering the last event done (window_txid, window_id); each call
-- scans at most p_chunk events.
--
-- When the consumer has no available task (the common case for a consumer
-- that keeps up), the caller is hungry: the best p_limit matches of the chunk
-- are inserted already leased to it, so the event, the task and the ack are
-- the only rows written. When every event in the window has the default
-- priority those are simply its first p_limit matches: a first pass reads
-- p_limit events; if fewer of them matched, a second pass finds where the
-- missing matches end within the rest of the chunk and cuts the window
-- there. A busy consumer reads no more than it leases, a selective one scans
-- a whole chunk per call. Otherwise the chunk's matches queue up as
-- available and the claim takes the best by priority.
--
-- Leased and claimed tasks together hold at most about p_max_bytes of
-- payload (always at least one task).
--
-- p_refill false skips the window (claim only). Only one session refills a
-- consumer at a time: the others wait for its row, in turn, and each then
-- refills for itself, so that every waiting subscriber gets work in its own
-- round trip. (With SKIP LOCKED they came back busy and empty, and looked
-- again 5 ms later: whoever asked right after a commit won, and 2 and 4
-- processes drained slower than one.) The wait is the refill before theirs,
-- a few milliseconds; it is bounded by lock_timeout below, after which the
-- call fails with lock_not_available (55P03), which the subscriber takes as
-- busy: something else holds the row (an operator's open transaction that
-- paused or reset the consumer, say).
--
-- A consumer ordered by key (migration 0012) gets, under the same row lock,
-- two more steps. First the keys noted in sluice.freed_keys since the last
-- refill move on: each one's first waiting task (by event id) becomes
-- available (scheduled when its event's deliver_at is still ahead) unless the
-- key still has a task available, running or scheduled (or, holding keys on
-- dead letters, discarded). Then each new task of a key waits when the key
-- has a pending task (available, running, scheduled, or waiting with a
-- smaller event id) or an earlier one in the same chunk: never leased nor
-- claimed until its turn. Keyless events are not held back. For other
-- consumers these steps fold away: the statements are planned with the
-- consumer's settings as constants (force_custom_plan below).
--
-- A key's order is event id order (the order of publishing: an event
-- published after another's commit has the larger id), not the window's
-- (txid, id) order: a transaction that wrote something first and publishes
-- at its end (the outbox pattern) has the smaller transaction id but the
-- later event. Within a chunk the key's first task by id goes first. Across
-- the chunks of one window (a backlog larger than p_chunk), a key whose
-- events are not all read yet (migration 0013's index on (stream, key,
-- txid, id) tells at once) waits with a note, and moves on once the window
-- has read them: one of them may have a smaller id. A later window cannot
-- hold a smaller id of an event published after another's commit.
--
-- Rows: first one status row (materialized, more, busy (always false
-- now); the task columns null), then one row per claimed task (the status columns null). more: the
-- window was cut; call again to continue it.
--
-- Errors: P0002 when the consumer does not exist; SL001 when its position is
-- ahead of this server's transaction ids (a dump restored elsewhere, or a
-- move by logical replication): nothing is claimed until reset_position.
CREATE OR REPLACE FUNCTION sluice.fetch_v2(p_consumer integer, p_worker uuid, p_lease interval, p_limit integer,
                                           p_chunk integer, p_refill boolean, p_max_bytes bigint)
RETURNS TABLE (materialized integer, more boolean, busy boolean,
               event_id bigint, lease_token bigint, attempt integer, priority smallint, "position" bigint,
               subject text, payload text, metadata text, key text, created_at timestamptz)
LANGUAGE plpgsql
-- Plan each statement for the call's own values: the cached generic plans,
-- built from estimates on a table whose statistics lag its churn, drained
-- several times slower (sluice-bench drain: ~7k/s generic, ~41k/s custom).
SET plan_cache_mode = force_custom_plan
-- And never compiled by LLVM: planned for every call, with estimates that
-- can be far off (no statistics while autovacuum is off or behind), a
-- statement's cost can pass jit_above_cost, and each call would then spend
-- tens of milliseconds compiling what runs in a few.
SET jit = off
-- How long a refill waits for the one before it (see above).
SET lock_timeout = '2s'
AS $$
#variable_conflict use_column
DECLARE
    c              sluice.consumers%ROWTYPE;
    v_now          pg_snapshot;
    v_end          pg_snapshot;
    v_xip          xid8[];
    v_from         xid8;
    v_from_id      bigint;
    v_lo           xid8;
    v_hungry       boolean := false;
    v_cut_txid     xid8;
    v_cut_id       bigint;
    v_in_order     boolean := false;
    v_pass         integer := 0;
    v_scan         integer;
    v_budget       integer := p_chunk;
    v_want         integer := p_limit;
    v_wtxid        xid8;
    v_wid          bigint;
    v_scanned      integer;
    v_inserted     integer;
    v_queued       integer := 0;
    v_pass_queued  integer;
    v_pass_leased  sluice.claimed_task[];
    v_pass_bytes   bigint;
    v_txid         xid8;
    v_id           bigint;
    v_paused       boolean;
    v_materialized integer := 0;
    v_more         boolean := false;
    v_leased       sluice.claimed_task[] := '{}';
    v_bytes        bigint := 0;
    v_promoted     integer;
    v_held_keys    text[];
    v_held_ids     bigint[];
BEGIN
    IF p_refill THEN
        -- NO KEY UPDATE, not UPDATE: the foreign-key checks of inserts into
        -- task_log and workers take KEY SHARE on this row, and a handler's
        -- open transaction that nacked or deferred would otherwise hold up
        -- every refill of the consumer until it ended.
        SELECT * INTO c FROM sluice.consumers co WHERE co.id = p_consumer FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'sluice: consumer % does not exist', p_consumer USING ERRCODE = 'no_data_found';
        END IF;

        -- Only now, under the row lock: a snapshot taken before it could be
        -- older than the position another session stored meanwhile, and
        -- storing it would move the position back (events delivered again)
        -- or look like a position from another cluster.
        v_now := pg_current_snapshot();
        -- A position is a snapshot of this cluster's transaction ids. One
        -- ahead of the server came from elsewhere: taking it as is would
        -- skip every event until the server catches up.
        IF pg_snapshot_xmax(coalesce(c.window_end, c.position)) > pg_snapshot_xmax(v_now) THEN
            RAISE EXCEPTION 'sluice: the position of consumer % is ahead of this server''s transactions', p_consumer
                USING ERRCODE = 'SL001',
                      DETAIL = format('position %s, server snapshot %s', coalesce(c.window_end, c.position), v_now),
                      HINT = 'the database was restored or moved from another cluster; replay with reset_position';
        END IF;

        v_paused := c.paused;
        v_end := coalesce(c.window_end, v_now);
        v_wtxid := coalesce(c.window_txid, '0'::xid8);
        v_wid := coalesce(c.window_id, 0);
        -- The transactions in progress at the position that the window has
        -- not passed yet. One it has passed (a long transaction that pins
        -- the xmin, say) cannot hold events after (v_wtxid, v_wid), and left
        -- in, its txid = ANY with the row comparison below made the scan
        -- read every event after the window's progress (167 ms a call, for
        -- no row, under a pinned xmin with a backlog).
        v_xip := ARRAY(SELECT x FROM pg_snapshot_xip(c.position) AS x WHERE x >= v_wtxid);
        IF c.ordered_by_key THEN
            -- Keys whose head finished: their next task's turn. Notes of
            -- transactions not yet committed are not seen, and wait for
            -- the next refill. While a window is being read in chunks, a
            -- key with events still unread in it keeps its note and waits:
            -- one of those may have a smaller event id than its waiting
            -- tasks (an outbox transaction: an early transaction id, a late
            -- publish), and a key runs in event id order.
            v_lo := least(greatest(pg_snapshot_xmax(c.position), v_wtxid), (SELECT min(x) FROM unnest(v_xip) AS x));
            WITH noted AS MATERIALIZED (
                SELECT k.key,
                       -- (constant false outside a window: folded away).
                       -- A scalar subquery with LIMIT, not EXISTS: one
                       -- descent of the key index per key. As EXISTS it was
                       -- planned as one hashed scan of the window's rest by
                       -- (stream, txid, id): 950,000 rows, 0.5 s a refill.
                       c.window_end IS NOT NULL AND (
                           -- As in the chunk below: an unread event of the
                           -- key with a smaller id than its first waiting
                           -- task, or more than 100 unread.
                           SELECT count(*) FILTER (WHERE u.id < (
                                      SELECT min(w.event_id) FROM sluice.tasks w
                                      WHERE w.consumer_id = c.id AND w.key = k.key AND w.state = 'waiting')) > 0
                                  OR count(*) > 100
                           FROM (
                               SELECT r.id FROM sluice.events r
                               WHERE r.stream_id = c.stream_id AND r.key = k.key
                                 AND r.txid >= v_lo AND r.txid < pg_snapshot_xmax(c.window_end)
                                 AND (r.txid, r.id) > (v_wtxid, v_wid)
                                 AND (r.txid = ANY (v_xip) OR r.txid >= pg_snapshot_xmax(c.position))
                                 AND pg_visible_in_snapshot(r.txid, c.window_end)
                                 AND r.subject ~ c.include_regex
                                 AND (c.exclude_regex IS NULL OR r.subject !~ c.exclude_regex)
                                 AND (c.start_from IS NULL OR r.created_at >= c.start_from)
                                 AND (c.start_event IS NULL OR r.id >= c.start_event)
                               ORDER BY r.txid, r.id
                               LIMIT 101) AS u) AS unread
                -- Held notes (keys held back for unread events, below)
                -- once the window is read: until then there is no need to
                -- ask again for each of them at every refill.
                FROM (SELECT DISTINCT f.key FROM sluice.freed_keys f
                      WHERE f.consumer_id = c.id AND (NOT f.held OR c.window_end IS NULL)) AS k
            ),
            freed AS (
                -- Only the notes this statement saw (its snapshot): one
                -- committed meanwhile is left for the next refill.
                DELETE FROM sluice.freed_keys f
                WHERE f.consumer_id = c.id AND f.key IN (SELECT n.key FROM noted n WHERE NOT n.unread)
            ),
            next AS MATERIALIZED (
                -- Per key, by index (LATERAL, OFFSET 0): whatever the
                -- estimates, never a join of every waiting task (that plan,
                -- chosen on a tasks table without statistics, took seconds).
                SELECT n.event_id
                FROM (SELECT nk.key FROM noted nk WHERE NOT nk.unread) AS k
                CROSS JOIN LATERAL (
                    SELECT w.event_id FROM sluice.tasks w
                    WHERE w.consumer_id = c.id AND w.key = k.key AND w.state = 'waiting'
                      -- The states of tasks_key_busy_idx, exactly: no
                      -- other partial index fits (one of a single state
                      -- would be read whole, every key's tasks in it).
                      AND NOT EXISTS (
                          SELECT 1 FROM sluice.tasks b
                          WHERE b.consumer_id = c.id AND b.key = k.key
                            AND b.state IN ('available', 'running', 'scheduled', 'discarded')
                            AND (b.state <> 'discarded' OR c.hold_key_on_dead_letter))
                    ORDER BY w.event_id
                    LIMIT 1
                    OFFSET 0
                ) AS n
            )
            UPDATE sluice.tasks t
            SET state = CASE WHEN t.schedule_at > now() THEN 'scheduled' ELSE 'available' END::sluice.task_state,
                schedule_at = CASE WHEN t.schedule_at > now() THEN t.schedule_at END
            WHERE t.consumer_id = c.id AND t.event_id = ANY (ARRAY(SELECT event_id FROM next))
              -- As text: a test the waiting index's predicate does not
              -- match, so the update looks the tasks up by primary key
              -- instead of reading every waiting task of the consumer.
              AND t.state::text = 'waiting';
            GET DIAGNOSTICS v_promoted = ROW_COUNT;
            v_queued := v_queued + v_promoted;
        END IF;
        v_hungry := p_worker IS NOT NULL AND p_limit > 0 AND NOT c.paused
                    AND NOT EXISTS (SELECT 1 FROM sluice.tasks t
                                    WHERE t.consumer_id = p_consumer AND t.state = 'available');
        -- Hungry, and only default priorities in the window (a partial index
        -- holds just the prioritized events): leasing in window order is
        -- leasing the best.
        -- The range bounds repeat the condition in a form the planner prunes
        -- partitions by; without them planning this check took 40 times
        -- longer than running it.
        v_lo := least(greatest(pg_snapshot_xmax(c.position), v_wtxid), (SELECT min(x) FROM unnest(v_xip) AS x));
        v_in_order := v_hungry AND NOT EXISTS (
            SELECT 1 FROM sluice.events e
            WHERE e.stream_id = c.stream_id AND e.priority > 1
              AND (e.txid = ANY (v_xip) OR e.txid >= greatest(pg_snapshot_xmax(c.position), v_wtxid))
              AND e.txid >= v_lo AND e.txid < pg_snapshot_xmax(v_end));
        v_scan := CASE WHEN v_in_order THEN least(p_limit, p_chunk) ELSE p_chunk END;

        LOOP
            v_pass := v_pass + 1;
            IF v_pass > 1 THEN
                v_xip := ARRAY(SELECT x FROM unnest(v_xip) AS x WHERE x >= v_wtxid);
            END IF;
            v_from := greatest(pg_snapshot_xmax(c.position), v_wtxid);
            -- Where the scan of the transactions after the position starts,
            -- as one row bound: (v_from, 0) until the window's progress is
            -- past v_from (event ids start at 1). With the window's progress
            -- (0, 0) beside txid >= v_from, btree could not tell which bound
            -- is tighter, started at the row bound, and read the stream's
            -- index from the start of its partition on the first call of
            -- every window (164 pages for 7 events after 32,000; 2 of the
            -- 4 ms of such a call).
            v_from_id := CASE WHEN v_wtxid = v_from THEN v_wid ELSE 0 END;
            v_lo := least(v_from, (SELECT min(x) FROM unnest(v_xip) AS x));
            v_cut_txid := NULL;
            v_cut_id := NULL;
            -- Not for a consumer ordered by key: its matches may wait (for
            -- their key, or for the rest of the window), so the second pass
            -- reads the rest of the chunk instead of stopping where enough
            -- matches to lease would end (a backlog of 20,000 events over
            -- 5,000 keys was read 2,000 events a call, all waiting).
            IF v_pass = 2 AND NOT c.ordered_by_key THEN
                -- The v_want-th match within the rest of the chunk, if any.
                SELECT b.txid, b.id INTO v_cut_txid, v_cut_id
                FROM (SELECT e.id, e.txid, e.subject, e.created_at
                      FROM sluice.events e
                      WHERE e.stream_id = c.stream_id
                        AND e.txid >= v_from
                        AND e.txid < pg_snapshot_xmax(v_end)
                        AND pg_visible_in_snapshot(e.txid, v_end)
                        AND (e.txid, e.id) > (v_from, v_from_id)
                      ORDER BY e.txid, e.id
                      LIMIT v_scan) AS b
                WHERE b.subject ~ c.include_regex
                  AND (c.exclude_regex IS NULL OR b.subject !~ c.exclude_regex)
                  AND (c.start_from IS NULL OR b.created_at >= c.start_from)
                  AND (c.start_event IS NULL OR b.id >= c.start_event)
                ORDER BY b.txid, b.id
                OFFSET v_want - 1
                LIMIT 1;
            END IF;

            -- The window's next events in (txid, id) order.
            WITH win AS (
                SELECT u.* FROM (
                    -- Transactions that were in progress at the position.
                    (SELECT e.id, e.txid, e.subject, e.priority, e.deliver_at, e.created_at, e.key,
                            pg_column_size(e.payload) AS size
                     FROM sluice.events e
                     WHERE e.stream_id = c.stream_id
                       AND e.txid = ANY (v_xip)
                       AND pg_visible_in_snapshot(e.txid, v_end)
                       AND (e.txid, e.id) > (v_wtxid, v_wid)
                     ORDER BY e.txid, e.id
                     LIMIT v_scan)
                    UNION ALL
                    -- Transactions that started after it, up to the window's end.
                    (SELECT e.id, e.txid, e.subject, e.priority, e.deliver_at, e.created_at, e.key,
                            pg_column_size(e.payload) AS size
                     FROM sluice.events e
                     WHERE e.stream_id = c.stream_id
                       AND e.txid >= v_from
                       AND e.txid < pg_snapshot_xmax(v_end)
                       AND pg_visible_in_snapshot(e.txid, v_end)
                       AND (e.txid, e.id) > (v_from, v_from_id)
                       AND (v_cut_txid IS NULL OR (e.txid, e.id) <= (v_cut_txid, v_cut_id))
                     ORDER BY e.txid, e.id
                     LIMIT v_scan)
                ) AS u
                ORDER BY u.txid, u.id
                LIMIT v_scan
            ),
            last AS (
                SELECT w.txid, w.id FROM win w ORDER BY w.txid DESC, w.id DESC LIMIT 1
            ),
            marked AS (
                -- The best v_want of the chunk (within the byte budget)
                -- go to the caller at once, as the claim would have
                -- picked them; the rest queue up.
                SELECT w.id, w.txid, w.priority, w.deliver_at, w.key,
                       CASE WHEN w.waits THEN 'waiting'
                            WHEN w.deliver_at > now() THEN 'scheduled'
                            WHEN v_hungry
                                 AND row_number() OVER best <= v_want
                                 AND v_bytes + sum(w.size) OVER best - w.size < p_max_bytes THEN 'running'
                            ELSE 'available' END::sluice.task_state AS state
                FROM (
                    SELECT mk.*, mk.wait_for IS NOT NULL AS waits
                    FROM (
                        -- Ordered by key: what the task waits for, if
                        -- anything: an earlier task of its key (by event id,
                        -- the order of publishing, whatever the transaction
                        -- ids) in this chunk or pending, or events of its key
                        -- not read yet in this window, one of which may come
                        -- before it ('unread'). Each test by its own index,
                        -- in this order (CASE): the last ones only for the
                        -- first task of an idle key.
                        SELECT mw.*,
                               CASE WHEN NOT c.ordered_by_key OR mw.key IS NULL THEN NULL
                                    WHEN row_number() OVER (PARTITION BY CASE WHEN c.ordered_by_key THEN mw.key END
                                                            ORDER BY mw.id) > 1 THEN 'earlier'
                                    WHEN EXISTS (
                                        SELECT 1 FROM sluice.tasks b
                                        WHERE b.consumer_id = c.id AND b.key = mw.key
                                          AND b.state IN ('available', 'running', 'scheduled', 'discarded')
                                          AND (b.state <> 'discarded' OR c.hold_key_on_dead_letter)) THEN 'earlier'
                                    WHEN EXISTS (
                                        SELECT 1 FROM sluice.tasks b
                                        WHERE b.consumer_id = c.id AND b.key = mw.key
                                          AND b.state = 'waiting' AND b.event_id < mw.id) THEN 'earlier'
                                    WHEN (
                                        -- The key's next unread events in the
                                        -- window, by its index: one with a
                                        -- smaller id, or more than 100 of them
                                        -- (not read one by one: the key waits
                                        -- for the window instead). A scalar
                                        -- subquery: see unread above.
                                        SELECT count(*) FILTER (WHERE u.id < mw.id) > 0 OR count(*) > 100
                                        FROM (
                                            SELECT r.id FROM sluice.events r, last l
                                            WHERE r.stream_id = c.stream_id AND r.key = mw.key
                                              AND r.txid >= v_lo AND r.txid < pg_snapshot_xmax(v_end)
                                              AND (r.txid, r.id) > (l.txid, l.id)
                                              AND (r.txid = ANY (v_xip) OR r.txid >= pg_snapshot_xmax(c.position))
                                              AND pg_visible_in_snapshot(r.txid, v_end)
                                              AND r.subject ~ c.include_regex
                                              AND (c.exclude_regex IS NULL OR r.subject !~ c.exclude_regex)
                                              AND (c.start_from IS NULL OR r.created_at >= c.start_from)
                                              AND (c.start_event IS NULL OR r.id >= c.start_event)
                                            ORDER BY r.txid, r.id
                                            LIMIT 101) AS u) THEN 'unread'
                               END AS wait_for
                        FROM win mw
                        WHERE mw.subject ~ c.include_regex
                          AND (c.exclude_regex IS NULL OR mw.subject !~ c.exclude_regex)
                          AND (c.start_from IS NULL OR mw.created_at >= c.start_from)
                          AND (c.start_event IS NULL OR mw.id >= c.start_event)
                    ) AS mk
                ) AS w
                WINDOW best AS (PARTITION BY coalesce(w.deliver_at > now(), false) OR w.waits
                                ORDER BY w.priority DESC, w.id ROWS UNBOUNDED PRECEDING)
            ),
            ins AS (
                INSERT INTO sluice.tasks AS t (consumer_id, event_id, event_txid, state, priority, schedule_at,
                                               position, attempt, worker_id, lease_until, lease_token, key)
                SELECT c.id, m.id, m.txid, m.state, m.priority,
                       -- A waiting task keeps its event's time for its turn.
                       CASE WHEN m.state IN ('scheduled', 'waiting') THEN m.deliver_at END,
                       m.id,
                       CASE WHEN m.state = 'running' THEN 1 ELSE 0 END,
                       CASE WHEN m.state = 'running' THEN p_worker END,
                       CASE WHEN m.state = 'running' THEN now() + p_lease END,
                       nextval('sluice.lease_token'),
                       CASE WHEN c.ordered_by_key THEN m.key END
                FROM marked AS m
                -- A replay (reset_position) brings completed tasks back as new
                -- ones; pending, dead and cancelled tasks stay as they are.
                ON CONFLICT (consumer_id, event_id) DO UPDATE
                SET state = excluded.state, priority = excluded.priority, schedule_at = excluded.schedule_at,
                    position = excluded.position, attempt = excluded.attempt, worker_id = excluded.worker_id,
                    lease_until = excluded.lease_until, lease_token = excluded.lease_token,
                    event_txid = excluded.event_txid, errors = '[]', created_at = now(), finished_at = NULL,
                    key = excluded.key
                WHERE t.state = 'completed'
                RETURNING t.event_id, t.event_txid, t.state, t.attempt, t.priority, t.position, t.lease_token, t.key
            ),
            leased AS (
                -- Each leased event looked up by primary key, one at a time
                -- (LATERAL, OFFSET 0: the plan cannot be anything else). The
                -- estimates of these CTEs are too rough for a join: it came
                -- out as a nested loop of 500 x 500, and, once the partition
                -- had been analyzed before the window's transaction ids
                -- existed (the planner then expects one row in the window),
                -- as a scan of the whole window per leased task (7 s a call).
                SELECT ROW(i.event_id, i.lease_token, i.attempt, i.priority, i.position, e.subject,
                           e.payload::text, e.metadata::text, e.key, e.created_at)::sluice.claimed_task AS task,
                       pg_column_size(e.payload) AS size
                FROM ins i
                CROSS JOIN LATERAL (
                    SELECT ev.subject, ev.payload, ev.metadata, ev.key, ev.created_at
                    FROM sluice.events ev
                    WHERE ev.txid = i.event_txid AND ev.id = i.event_id
                      -- The window's bounds, known when the statement is
                      -- planned: the plan reads the window's partitions only,
                      -- instead of choosing a partition again for every row.
                      AND ev.txid >= v_lo AND ev.txid < pg_snapshot_xmax(v_end)
                    OFFSET 0
                ) AS e
                WHERE i.state = 'running'
            )
            SELECT (SELECT count(*) FROM win), i.inserted, i.queued, last.txid, last.id, lt.tasks, lt.bytes,
                   hk.keys, hk.ids
            INTO v_scanned, v_inserted, v_pass_queued, v_txid, v_id, v_pass_leased, v_pass_bytes,
                 v_held_keys, v_held_ids
            FROM (SELECT count(*) AS inserted, count(*) FILTER (WHERE ins.state = 'available') AS queued
                  FROM ins) AS i
            CROSS JOIN (SELECT coalesce(array_agg(l.task), '{}') AS tasks, coalesce(sum(l.size), 0) AS bytes
                        FROM leased l) AS lt
            -- Ordered by key: each key's first task of the chunk, if it
            -- waits (below). (Folded away for other consumers.)
            CROSS JOIN (SELECT array_agg(f.key) AS keys, array_agg(f.event_id) AS ids
                        FROM (SELECT DISTINCT ON (i.key) i.key, i.event_id, i.state FROM ins i
                              WHERE c.ordered_by_key AND i.key IS NOT NULL
                              ORDER BY i.key, i.event_id) AS f
                        WHERE f.state = 'waiting') AS hk
            LEFT JOIN last ON true;

            -- A key held back for its unread events gets a note (held): the
            -- refill gives it its turn once the window is read. A key's
            -- first task of the chunk, if waiting, waits for unread events
            -- exactly when its key has neither a busy task nor an earlier
            -- waiting one (the chunk made none of those: its first task of
            -- the key waits, and so do the later ones). A statement of its
            -- own, run for ordered consumers only: as a CTE of the chunk's
            -- statement, planning and opening it cost every consumer's
            -- fetch (the latency's p50 rose by 0.4 ms).
            IF c.ordered_by_key AND cardinality(v_held_keys) > 0 THEN
                INSERT INTO sluice.freed_keys (consumer_id, key, held)
                SELECT c.id, f.key, true
                FROM unnest(v_held_keys, v_held_ids) AS f(key, event_id)
                -- (scalar subqueries with LIMIT: by index per key, never an
                -- anti-join hashing every waiting task of the consumer)
                WHERE (SELECT true FROM sluice.tasks b
                       WHERE b.consumer_id = c.id AND b.key = f.key
                         AND b.state IN ('available', 'running', 'scheduled', 'discarded')
                         AND (b.state <> 'discarded' OR c.hold_key_on_dead_letter)
                       LIMIT 1) IS NULL
                  AND (SELECT true FROM sluice.tasks b
                       WHERE b.consumer_id = c.id AND b.key = f.key
                         AND b.state = 'waiting' AND b.event_id < f.event_id
                       LIMIT 1) IS NULL;
            END IF;

            v_materialized := v_materialized + v_inserted;
            v_queued := v_queued + v_pass_queued;
            v_leased := v_leased || v_pass_leased;
            v_bytes := v_bytes + v_pass_bytes;
            v_want := v_want - cardinality(v_pass_leased);
            v_budget := v_budget - v_scanned;
            IF v_scanned > 0 THEN
                v_wtxid := v_txid;
                v_wid := v_id;
            END IF;
            -- The window is done when a pass read less than it could, uncut.
            v_more := v_scanned >= v_scan OR v_cut_txid IS NOT NULL;
            EXIT WHEN NOT v_in_order OR v_pass = 2 OR NOT v_more OR v_want <= 0 OR v_budget <= 0
                   OR v_bytes >= p_max_bytes;
            v_scan := v_budget;
        END LOOP;

        IF v_more THEN
            UPDATE sluice.consumers co
            SET window_end = v_end, window_txid = v_wtxid, window_id = v_wid
            WHERE co.id = c.id;
        ELSE
            UPDATE sluice.consumers co
            SET position = v_end, window_end = NULL, window_txid = NULL, window_id = NULL
            WHERE co.id = c.id;
        END IF;
    ELSIF p_limit > 0 THEN
        SELECT co.paused INTO v_paused FROM sluice.consumers co WHERE co.id = p_consumer;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'sluice: consumer % does not exist', p_consumer USING ERRCODE = 'no_data_found';
        END IF;
    END IF;

    materialized := v_materialized;
    more := v_more;
    -- Always false since revision 7 (the refill waits; see above); kept so
    -- that the row keeps its shape.
    busy := false;
    RETURN NEXT;
    materialized := NULL;
    more := NULL;
    busy := NULL;

    RETURN QUERY
    SELECT NULL::integer, NULL::boolean, NULL::boolean, l.event_id, l.lease_token, l.attempt, l.priority,
           l.position, l.subject, l.payload, l.metadata, l.key, l.created_at
    FROM unnest(v_leased) AS l;

    -- The rest from the queue: best priority first, then position. SKIP
    -- LOCKED lets competing workers claim disjoint tasks without waiting.
    -- Not when the caller was hungry (no task was available) and the refill
    -- queued none: only a task made available since then (a requeue, a
    -- rescue) could be there, and the next fetch finds it. That is the
    -- common call of a subscriber that keeps up, and this statement was a
    -- fifth of its time (planning, mostly).
    IF p_limit > cardinality(v_leased) AND p_worker IS NOT NULL AND NOT coalesce(v_paused, true)
       AND (cardinality(v_leased) = 0 OR v_bytes < p_max_bytes)
       AND NOT (v_hungry AND v_queued = 0)
    THEN
        RETURN QUERY
        WITH picked AS MATERIALIZED (
            -- The event is read here, once: its size for the byte budget,
            -- and what the handler gets.
            SELECT t.consumer_id, t.event_id, t.priority, t.position, e.id IS NOT NULL AS has_event,
                   coalesce(pg_column_size(e.payload), 0) AS size, e.subject, e.payload::text AS payload,
                   e.metadata::text AS metadata, e.key, e.created_at
            FROM sluice.tasks t
            -- One lookup by primary key per task, whatever the estimates (see leased).
            LEFT JOIN LATERAL (
                SELECT ev.id, ev.subject, ev.payload, ev.metadata, ev.key, ev.created_at
                FROM sluice.events ev
                WHERE ev.txid = t.event_txid AND ev.id = t.event_id
                OFFSET 0
            ) AS e ON true
            WHERE t.consumer_id = p_consumer AND t.state = 'available'
            ORDER BY t.priority DESC, t.position
            LIMIT p_limit - cardinality(v_leased)
            FOR UPDATE OF t SKIP LOCKED
        ),
        chosen AS MATERIALIZED (
            -- Within the byte budget, which the first task of a call always fits.
            SELECT s.* FROM (
                SELECT p.*, sum(p.size) OVER (ORDER BY p.priority DESC, p.position ROWS UNBOUNDED PRECEDING)
                                - p.size AS before
                FROM picked p
            ) AS s
            WHERE v_bytes + s.before < p_max_bytes
        ),
        -- A task whose event is gone can never be handled: discard it, saying
        -- why, rather than claim it again and again.
        orphaned AS (
            UPDATE sluice.tasks t
            SET state = 'discarded', finished_at = now(), lease_until = NULL, worker_id = NULL,
                errors = t.errors || jsonb_build_array(jsonb_build_object(
                    'attempt', t.attempt, 'at', now(), 'error', 'event ' || t.event_id || ' no longer exists'))
            FROM chosen ch
            WHERE t.consumer_id = p_consumer AND t.event_id = ch.event_id AND NOT ch.has_event
            RETURNING t.consumer_id, t.event_id, t.attempt, t.priority
        ),
        orphans_logged AS (
            INSERT INTO sluice.task_log (consumer_id, event_id, attempt, action, reason, priority)
            SELECT o.consumer_id, o.event_id, o.attempt, 'discarded', 'event no longer exists', o.priority
            FROM orphaned o
        ),
        claimed AS (
            UPDATE sluice.tasks t
            SET state = 'running', attempt = t.attempt + 1, worker_id = p_worker, lease_until = now() + p_lease,
                lease_token = nextval('sluice.lease_token')
            FROM chosen ch
            WHERE t.consumer_id = p_consumer AND t.event_id = ch.event_id AND ch.has_event
            -- The event's columns straight from chosen: joined to it again
            -- afterwards, two CTE scans estimated at one row each made a
            -- nested loop, 1,000 x 1,000 comparisons (85 of the 107 ms of a
            -- claim of 1,000 on a table without statistics).
            RETURNING t.event_id, t.lease_token, t.attempt, t.priority, t.position,
                      ch.subject, ch.payload, ch.metadata, ch.key, ch.created_at
        )
        SELECT NULL::integer, NULL::boolean, NULL::boolean, cl.event_id, cl.lease_token, cl.attempt, cl.priority,
               cl.position, cl.subject, cl.payload, cl.metadata, cl.key, cl.created_at
        FROM claimed cl;
    END IF;
END;
$$;
