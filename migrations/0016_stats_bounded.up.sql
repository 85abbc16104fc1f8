-- The queue's figures (sluice::queue_stats: `sluice stats`, the gauges of
-- /metrics, the dashboard) at a bounded cost whatever the backlog: each is
-- counted by reading at most a cap of index entries (consumer_stats.sql),
-- and one that reaches the cap is estimated from the planner's statistics
-- by the two functions below. See docs/DESIGN.md, "The queue's figures".

-- Counts each finished state of a consumer apart within the cap: the
-- retention index (tasks_finished_idx, by finish time) mixes the three
-- states, so counting the dead letters of a consumer that keeps millions
-- of completed tasks would read them all. Finished tasks only: the claim
-- (available to running) and a default ack (a delete) never touch it.
CREATE INDEX tasks_finished_state_idx ON sluice.tasks (consumer_id, state, event_id)
    WHERE state IN ('completed', 'discarded', 'cancelled');

-- Lets the planner estimate a consumer's tasks in a state from the
-- combination, not from each column as if they were independent (one
-- consumer's backlog is available, another's kept completed). Built by
-- ANALYZE (autovacuum's, or by hand).
CREATE STATISTICS sluice.tasks_consumer_state (mcv) ON consumer_id, state FROM sluice.tasks;

-- The planner's estimate of how many tasks of consumer p_consumer are in
-- state p_state: cheap (a plan, no scan), as fresh as the last ANALYZE of
-- sluice.tasks scaled to the table's current size. NULL while the table
-- has never been analyzed (no statistics: the estimate would be a guess).
CREATE FUNCTION sluice.estimated_tasks(p_consumer integer, p_state sluice.task_state) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    plan json;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_stats WHERE schemaname = 'sluice' AND tablename = 'tasks' AND attname = 'state') THEN
        RETURN NULL;
    END IF;
    EXECUTE format('EXPLAIN (FORMAT JSON) SELECT FROM sluice.tasks WHERE consumer_id = %s AND state = %L',
                   p_consumer, p_state) INTO plan;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric::bigint;
END;
$$;

-- The planner's estimate of how many events of stream p_stream have a
-- transaction id at or after p_from (every event of the stream from '0').
-- Each partition of sluice.events has its own statistics (autovacuum
-- analyzes partitions, not the partitioned table); NULL while none has any.
CREATE FUNCTION sluice.estimated_events(p_stream integer, p_from xid8) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    plan json;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_stats WHERE schemaname = 'sluice' AND tablename LIKE 'events%'
                                          AND attname = 'stream_id') THEN
        RETURN NULL;
    END IF;
    EXECUTE format('EXPLAIN (FORMAT JSON) SELECT FROM sluice.events WHERE stream_id = %s AND txid >= %L::xid8',
                   p_stream, p_from) INTO plan;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::numeric::bigint;
END;
$$;
