-- Per consumer of stream $1 (every stream when null; only consumer $2 when
-- not null): its stream's events, its lag (matching events its position has
-- not materialized yet, and when the oldest was published), its tasks by
-- state, since when the oldest available task waits, what its live workers
-- did in the last minute, and its workers by status. A worker silent past
-- its dead_after is gone, whatever it last said.
--
-- Bounded whatever the backlog: each count reads at most $3 index entries
-- (the cap, sluice::STATS_COUNT_CAP), so a count below $3 is exact and one
-- that reaches it is a lower bound, given with the planner's estimate
-- (sluice.estimated_tasks, sluice.estimated_events of migration 0016; NULL
-- without statistics) for stats.rs to report as estimated or "at least".
-- Each state has an index of its own whose rows are exactly that state's:
-- tasks_claim_idx, tasks_schedule_idx, tasks_lease_idx, tasks_key_waiting_idx
-- and tasks_finished_state_idx. Each read is ordered as its index is, and
-- runs with sorting off (stats_settings.sql), so that the plan walks the
-- index and stops at the cap whatever the estimates: the consumer of the
-- lateral is a parameter, so the planner only knows the average consumer,
-- and would scan the table for a count it thinks is most of it (measured:
-- 0.5 s for a consumer with no task beside one with 10,000,000), or, with
-- no statistics, read every task through a bitmap and sort them (4.6 s).
-- Measured on 10,000,000 tasks in docs/BENCHMARKS.md ("The queue's figures
-- on a backlog"): 25 ms analyzed, 42 ms without statistics.
SELECT s.name AS stream, c.name AS consumer, c.paused,
       ev.events, CASE WHEN ev.events >= $3 THEN sluice.estimated_events(c.stream_id, '0') END AS events_estimate,
       last.created_at AS last_event_at,
       lag.events AS lag_events, lag.examined >= $3 AS lag_capped,
       -- Past the cap: the matching share of the events examined, times the
       -- estimate of the events from the position's xmax (or the window's
       -- point, when it is further).
       CASE WHEN lag.examined >= $3
            THEN sluice.estimated_events(c.stream_id,
                                         CASE WHEN (c.window_txid, c.window_id) > (pg_snapshot_xmax(c.position), 0::bigint)
                                              THEN c.window_txid ELSE pg_snapshot_xmax(c.position) END)
                 * lag.events / lag.examined
       END AS lag_estimate,
       lag.oldest_at AS lag_oldest_at,
       sc.n AS scheduled, CASE WHEN sc.n >= $3 THEN sluice.estimated_tasks(c.id, 'scheduled') END AS scheduled_estimate,
       wa.n AS waiting, CASE WHEN wa.n >= $3 THEN sluice.estimated_tasks(c.id, 'waiting') END AS waiting_estimate,
       av.n AS available, CASE WHEN av.n >= $3 THEN sluice.estimated_tasks(c.id, 'available') END AS available_estimate,
       ru.n AS running, CASE WHEN ru.n >= $3 THEN sluice.estimated_tasks(c.id, 'running') END AS running_estimate,
       co.n AS completed, CASE WHEN co.n >= $3 THEN sluice.estimated_tasks(c.id, 'completed') END AS completed_estimate,
       di.n AS discarded, CASE WHEN di.n >= $3 THEN sluice.estimated_tasks(c.id, 'discarded') END AS discarded_estimate,
       ca.n AS cancelled, CASE WHEN ca.n >= $3 THEN sluice.estimated_tasks(c.id, 'cancelled') END AS cancelled_estimate,
       -- The oldest of those read; past the cap, also the head of each
       -- priority (the claim's order): close to the oldest, without a scan.
       least(av.oldest_at, heads.oldest_at) AS oldest_available_at,
       wk.completed_last_minute, wk.failed_last_minute,
       wk.active AS workers_active, wk.idle AS workers_idle, wk.stopping AS workers_stopping,
       wk.gone AS workers_gone
FROM sluice.consumers c
JOIN sluice.streams s ON s.id = c.stream_id
CROSS JOIN LATERAL (
    SELECT count(*) AS events
    FROM (SELECT FROM sluice.events e WHERE e.stream_id = c.stream_id ORDER BY e.txid, e.id LIMIT $3) x
) ev
LEFT JOIN LATERAL (
    -- The newest transaction's last event: one index entry per partition,
    -- where max(created_at) would read every event of the stream.
    SELECT e.created_at FROM sluice.events e WHERE e.stream_id = c.stream_id ORDER BY e.txid DESC, e.id DESC LIMIT 1
) last ON true
CROSS JOIN LATERAL (
    -- As the refill reads them (fetch_v2): not visible in the position, not
    -- yet passed by the window being worked through, and matching. At most
    -- $3 events are examined, oldest transactions first, from three places
    -- an index reads directly: the position's in-progress transactions;
    -- from its xmax on, after the window's last event done (a consumer
    -- catching up is part way through a window of millions, whose first
    -- events are done and must not use up the cap); and the window's own
    -- in-progress transactions before that point.
    SELECT count(*) AS examined,
           count(*) FILTER (WHERE (c.window_end IS NULL OR NOT pg_visible_in_snapshot(x.txid, c.window_end)
                                   OR (x.txid, x.id) > (c.window_txid, c.window_id))
                              AND x.subject ~ c.include_regex
                              AND (c.exclude_regex IS NULL OR x.subject !~ c.exclude_regex)
                              AND (c.start_from IS NULL OR x.created_at >= c.start_from)
                              AND (c.start_event IS NULL OR x.id >= c.start_event)) AS events,
           min(x.created_at) FILTER (WHERE (c.window_end IS NULL OR NOT pg_visible_in_snapshot(x.txid, c.window_end)
                                            OR (x.txid, x.id) > (c.window_txid, c.window_id))
                                       AND x.subject ~ c.include_regex
                                       AND (c.exclude_regex IS NULL OR x.subject !~ c.exclude_regex)
                                       AND (c.start_from IS NULL OR x.created_at >= c.start_from)
                                       AND (c.start_event IS NULL OR x.id >= c.start_event)) AS oldest_at
    FROM (SELECT c.window_txid IS NOT NULL
                 AND (c.window_txid, c.window_id) > (pg_snapshot_xmax(c.position), 0::bigint) AS after_window) w
    CROSS JOIN LATERAL
         ((SELECT e.txid, e.id, e.subject, e.created_at
           FROM pg_snapshot_xip(c.position) AS xip (txid)
           CROSS JOIN LATERAL (SELECT e.txid, e.id, e.subject, e.created_at FROM sluice.events e
                               WHERE e.stream_id = c.stream_id AND e.txid = xip.txid
                               ORDER BY e.id LIMIT $3) e
           LIMIT $3)
          UNION ALL
          (SELECT e.txid, e.id, e.subject, e.created_at FROM sluice.events e
           -- After (xmax, 0), or after the window's point if that is later:
           -- one row comparison, which the index starts from.
           WHERE e.stream_id = c.stream_id
             AND (e.txid, e.id) > (CASE WHEN w.after_window THEN c.window_txid ELSE pg_snapshot_xmax(c.position) END,
                                   CASE WHEN w.after_window THEN c.window_id ELSE 0 END)
           ORDER BY e.txid, e.id
           LIMIT $3)
          UNION ALL
          (SELECT e.txid, e.id, e.subject, e.created_at
           FROM pg_snapshot_xip(c.window_end) AS wxip (txid)
           CROSS JOIN LATERAL (SELECT e.txid, e.id, e.subject, e.created_at FROM sluice.events e
                               WHERE e.stream_id = c.stream_id AND e.txid = wxip.txid
                                 AND e.txid >= pg_snapshot_xmax(c.position)
                                 AND (e.txid, e.id) <= (c.window_txid, c.window_id)
                               ORDER BY e.id LIMIT $3) e
           LIMIT $3)
          LIMIT $3) x
) lag
CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(x.created_at) AS oldest_at
    FROM (SELECT t.created_at FROM sluice.tasks t WHERE t.consumer_id = c.id AND t.state = 'available'
          ORDER BY t.priority DESC, t.position LIMIT $3) x
) av
CROSS JOIN LATERAL (
    SELECT min(h.created_at) AS oldest_at
    FROM generate_series(1, 5) AS p (priority)
    CROSS JOIN LATERAL (
        SELECT t.created_at FROM sluice.tasks t
        WHERE av.n >= $3 AND t.consumer_id = c.id AND t.state = 'available' AND t.priority = p.priority
        ORDER BY t.position LIMIT 1
    ) h
) heads
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (SELECT FROM sluice.tasks t WHERE t.consumer_id = c.id AND t.state = 'scheduled'
                                  ORDER BY t.schedule_at LIMIT $3) x
) sc
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (SELECT FROM sluice.tasks t WHERE t.consumer_id = c.id AND t.state = 'waiting'
                                  ORDER BY t.key, t.event_id LIMIT $3) x
) wa
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (SELECT FROM sluice.tasks t WHERE t.consumer_id = c.id AND t.state = 'running'
                                  ORDER BY t.lease_until LIMIT $3) x
) ru
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (SELECT FROM sluice.tasks t WHERE t.consumer_id = c.id AND t.state = 'completed'
                                  ORDER BY t.event_id LIMIT $3) x
) co
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (SELECT FROM sluice.tasks t WHERE t.consumer_id = c.id AND t.state = 'discarded'
                                  ORDER BY t.event_id LIMIT $3) x
) di
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (SELECT FROM sluice.tasks t WHERE t.consumer_id = c.id AND t.state = 'cancelled'
                                  ORDER BY t.event_id LIMIT $3) x
) ca
CROSS JOIN LATERAL (
    SELECT coalesce(sum(w.completed_last_minute) FILTER (WHERE NOT w.gone), 0)::bigint AS completed_last_minute,
           coalesce(sum(w.failed_last_minute) FILTER (WHERE NOT w.gone), 0)::bigint AS failed_last_minute,
           count(*) FILTER (WHERE NOT w.gone AND w.status = 'active') AS active,
           count(*) FILTER (WHERE NOT w.gone AND w.status = 'idle') AS idle,
           count(*) FILTER (WHERE NOT w.gone AND w.status = 'stopping') AS stopping,
           count(*) FILTER (WHERE w.gone) AS gone
    FROM (SELECT x.*, x.heartbeat_at < now() - x.dead_after AS gone
          FROM sluice.workers x WHERE x.consumer_id = c.id) w
) wk
WHERE ($1::text IS NULL OR s.name = $1) AND ($2::text IS NULL OR c.name = $2)
ORDER BY s.name, c.name
