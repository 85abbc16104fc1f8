-- revision: 1
-- requires: 2
--
-- sluice.ack_v1: the ack, explicit or a subscriber's batch, in one round
-- trip. A function for its settings: planned for each call's own arrays (a
-- cached generic plan of this join took 160 ms for 1,000 acks instead of a
-- few), and never compiled by LLVM. Before it, the subscriber ran the
-- statement in a transaction of its own after SET LOCAL jit = off: three
-- round trips more per batch. It needs migration 2 (lease tokens) and is
-- dropped when that is reverted.
--
-- Completes the tasks (consumer p_consumer, event p_events[i]) still held
-- under lease token p_tokens[i]: deleted, or marked completed when the
-- consumer keeps completed tasks. Returns the event ids completed; a missing
-- one lost its lease.
--
-- Each acked task is found by its primary key, one probe per task (a
-- LATERAL subquery with OFFSET 0 cannot be planned otherwise), then deleted
-- or updated by its row address. Planned as a join or with `= ANY (p_events)`, the
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
-- jit_above_cost: the function runs with JIT off (below).
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
CREATE OR REPLACE FUNCTION sluice.ack_v1(p_consumer integer, p_events bigint[], p_tokens bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan
SET jit = off
AS $$
BEGIN
    RETURN QUERY
    WITH keep AS (
        SELECT completed_retention > interval '0' AS keep
        FROM sluice.consumers
        WHERE id = p_consumer
    ),
    target AS MATERIALIZED (
        SELECT x.tid, h.lease_token
        FROM unnest(p_events::bigint[], p_tokens::bigint[]) AS h(event_id, lease_token)
        CROSS JOIN LATERAL (
            SELECT t.ctid AS tid
            FROM sluice.tasks t
            WHERE t.consumer_id = p_consumer AND t.event_id = h.event_id
              AND t.lease_token = h.lease_token
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
    SELECT event_id FROM completed;
END;
$$;
