-- Completes the tasks (consumer $1, event $2[i]) still held under lease
-- token $3[i]: deleted, or marked completed when the consumer keeps completed
-- tasks. Returns the event ids completed; a missing one lost its lease.
--
-- Each acked task is found by its primary key, one probe per task (a
-- LATERAL subquery with OFFSET 0 cannot be planned otherwise), then deleted
-- or updated by its row address. Planned as a join or with `= ANY ($2)`, the
-- plan followed the statistics: without any (autovacuum off, the table never
-- analyzed) Postgres read every task row of the consumer, dead ones
-- included, and filtered the ids (16 ms for 1,000 acks after 100,000 tasks,
-- growing with every task since the last VACUUM); with statistics that show
-- few running tasks it scanned the partial index of running tasks, which
-- under a pinned xmin holds a dead entry for every acked task (659,493
-- entries read to ack 1,344 tasks, 185 ms). The state is compared as text
-- inside the probe for the same reason: so that the partial index cannot
-- serve it.
--
-- A row changed since it was found (handed back by the rescuer, whose update
-- gives it a new address) is not completed: its lease was lost.
WITH keep AS (
    SELECT completed_retention > interval '0' AS keep FROM sluice.consumers WHERE id = $1
),
target AS MATERIALIZED (
    SELECT x.tid
    FROM unnest($2::bigint[], $3::bigint[]) AS h(event_id, lease_token)
    CROSS JOIN LATERAL (
        SELECT t.ctid AS tid
        FROM sluice.tasks t
        WHERE t.consumer_id = $1 AND t.event_id = h.event_id AND t.lease_token = h.lease_token
          AND t.state::text = 'running'
        OFFSET 0
    ) AS x
),
deleted AS (
    DELETE FROM sluice.tasks t
    WHERE t.ctid = ANY (ARRAY(SELECT tid FROM target))
      AND t.consumer_id = $1 AND t.state::text = 'running'
      AND NOT coalesce((SELECT keep FROM keep), false)
    RETURNING t.event_id
),
completed AS (
    UPDATE sluice.tasks t
    SET state = 'completed', finished_at = now(), lease_until = NULL
    WHERE t.ctid = ANY (ARRAY(SELECT tid FROM target))
      AND t.consumer_id = $1 AND t.state::text = 'running'
      AND coalesce((SELECT keep FROM keep), false)
    RETURNING t.event_id
)
SELECT event_id FROM deleted
UNION ALL
SELECT event_id FROM completed
