-- Per consumer of stream $1 (every stream when null; only consumer $2 when
-- not null): its stream's events, its lag (matching events its position has
-- not materialized yet, and when the oldest was published), its tasks by
-- state, since when the oldest available task waits, what its live workers
-- did in the last minute, and its workers by status. A worker silent past
-- its dead_after is gone, whatever it last said.
--
-- The counts are exact, so they read every task of the consumer and every
-- event after its position: cheap for a queue that keeps up, slower for a
-- backlog of millions (the operator wants to know about that one anyway).
SELECT s.name AS stream, c.name AS consumer, c.paused,
       ev.events, ev.last_event_at,
       lag.events AS lag_events, lag.oldest_at AS lag_oldest_at,
       tk.scheduled, tk.waiting, tk.available, tk.running, tk.completed, tk.discarded, tk.cancelled,
       tk.oldest_available_at,
       wk.completed_last_minute, wk.failed_last_minute,
       wk.active AS workers_active, wk.idle AS workers_idle, wk.stopping AS workers_stopping,
       wk.gone AS workers_gone
FROM sluice.consumers c
JOIN sluice.streams s ON s.id = c.stream_id
CROSS JOIN LATERAL (
    SELECT count(*) AS events, max(e.created_at) AS last_event_at
    FROM sluice.events e WHERE e.stream_id = c.stream_id
) ev
CROSS JOIN LATERAL (
    -- As the refill reads them (fetch_v2): not visible in the position, and
    -- not yet passed by the window being worked through.
    SELECT count(*) AS events, min(e.created_at) AS oldest_at
    FROM sluice.events e
    WHERE e.stream_id = c.stream_id
      AND e.txid >= pg_snapshot_xmin(c.position)
      AND NOT pg_visible_in_snapshot(e.txid, c.position)
      AND (c.window_end IS NULL OR NOT pg_visible_in_snapshot(e.txid, c.window_end)
           OR (e.txid, e.id) > (c.window_txid, c.window_id))
      AND e.subject ~ c.include_regex
      AND (c.exclude_regex IS NULL OR e.subject !~ c.exclude_regex)
      AND (c.start_from IS NULL OR e.created_at >= c.start_from)
      AND (c.start_event IS NULL OR e.id >= c.start_event)
) lag
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE t.state = 'scheduled') AS scheduled,
           count(*) FILTER (WHERE t.state = 'waiting') AS waiting,
           count(*) FILTER (WHERE t.state = 'available') AS available,
           count(*) FILTER (WHERE t.state = 'running') AS running,
           count(*) FILTER (WHERE t.state = 'completed') AS completed,
           count(*) FILTER (WHERE t.state = 'discarded') AS discarded,
           count(*) FILTER (WHERE t.state = 'cancelled') AS cancelled,
           min(t.created_at) FILTER (WHERE t.state = 'available') AS oldest_available_at
    FROM sluice.tasks t WHERE t.consumer_id = c.id
) tk
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
