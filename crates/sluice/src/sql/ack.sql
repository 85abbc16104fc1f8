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
-- Without statistics on a large table the planner expects dozens of rows
-- per probe, and a subscriber's batch of 1,000 acks is estimated over
-- jit_above_cost: the subscriber runs it with JIT off (message.rs,
-- ack_batch).
--
-- The delete and the update name the row by its address and by nothing an
-- index could serve: with the consumer's id beside the address, statistics
-- taken before the consumer's backlog (one task expected) made the planner
-- read the consumer's whole range of the primary key instead (1,075,919
-- entries for 235 acks, 300 ms, after a pin). The probe has already checked
-- the consumer.
--
-- A row changed since it was found (handed back by the rescuer, and maybe
-- claimed again) is not completed: its lease was lost. Postgres rechecks
-- the row's newest version when the delete or update reaches it, and
-- refuses it because it lives at a new address; the state (as text) and
-- the lease token are checked too, so that the fence does not rest on that
-- detail of the executor. A task claimed again since the statement's
-- snapshot has a token drawn after every acked task was claimed (the
-- sequence has no per-session cache), so larger than any of them: one
-- comparison per row, where matching each row's own token searched the
-- whole list (3 ms for 1,000 acks).
WITH keep AS (
    SELECT completed_retention > interval '0' AS keep FROM sluice.consumers WHERE id = $1
),
target AS MATERIALIZED (
    SELECT x.tid, h.lease_token
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
      AND t.state::text = 'running' AND t.lease_token <= (SELECT max(lease_token) FROM target)
      AND NOT coalesce((SELECT keep FROM keep), false)
    RETURNING t.event_id
),
completed AS (
    UPDATE sluice.tasks t
    SET state = 'completed', finished_at = now(), lease_until = NULL
    WHERE t.ctid = ANY (ARRAY(SELECT tid FROM target))
      AND t.state::text = 'running' AND t.lease_token <= (SELECT max(lease_token) FROM target)
      AND coalesce((SELECT keep FROM keep), false)
    RETURNING t.event_id
)
SELECT event_id FROM deleted
UNION ALL
SELECT event_id FROM completed
