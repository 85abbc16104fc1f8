-- Moves the position of consumer $2 of stream $1 (replay): $3 'beginning'
-- (every event the stream holds), 'time' (events created at or after $4),
-- 'event' (events from id $5 on) or 'now' (only events published from now
-- on). Tasks still pending are kept as they are; completed ones come back
-- as new tasks when their events are materialized again.
--
-- Events of the stream whose transaction ids are ahead of this server's
-- (restored from a dump of another cluster, or moved by logical
-- replication) take this transaction's id, so that they are visible to
-- snapshots of this cluster again. Returns the consumer's id and how many
-- events were adopted; no row when the consumer does not exist.
WITH target AS (
    SELECT c.id, c.stream_id FROM sluice.consumers c
    JOIN sluice.streams s ON s.id = c.stream_id
    WHERE s.name = $1 AND c.name = $2
    FOR NO KEY UPDATE OF c
),
adopted AS (
    UPDATE sluice.events e
    SET txid = pg_current_xact_id()
    FROM target t
    WHERE e.stream_id = t.stream_id AND e.txid >= pg_snapshot_xmax(pg_current_snapshot())
    RETURNING e.id, e.txid
),
readopted AS (
    -- Their tasks follow them.
    UPDATE sluice.tasks t
    SET event_txid = a.txid
    FROM adopted a, target g
    WHERE t.consumer_id IN (SELECT c.id FROM sluice.consumers c WHERE c.stream_id = g.stream_id)
      AND t.event_id = a.id
    RETURNING 1
),
moved AS (
    UPDATE sluice.consumers c
    SET position = CASE WHEN $3 = 'now' THEN pg_current_snapshot() ELSE '1:1:'::pg_snapshot END,
        window_end = NULL, window_txid = NULL, window_id = NULL,
        start_from = CASE WHEN $3 = 'time' THEN $4::timestamptz END,
        -- 'now' is the snapshot alone, as when a consumer is created at now:
        -- events of transactions still open come when they commit. Events
        -- adopted from another cluster take this transaction's id, which the
        -- snapshot does not see; for 'now' they are before it all the same.
        start_event = CASE WHEN $3 = 'event' THEN $5::bigint
                           WHEN $3 = 'now' THEN (SELECT max(a.id) + 1 FROM adopted a) END,
        updated_at = now()
    FROM target t
    WHERE c.id = t.id
    RETURNING c.id, c.stream_id
),
woken AS (
    SELECT pg_notify('sluice.' || m.stream_id, '') FROM moved m
)
SELECT m.id, (SELECT count(*) FROM adopted) AS adopted, (SELECT count(*) FROM woken) AS woken,
       (SELECT count(*) FROM readopted) AS readopted
FROM moved m
