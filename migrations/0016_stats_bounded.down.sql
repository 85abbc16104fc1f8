-- Removes what 0016_stats_bounded.up.sql added (queue_stats of an older
-- release counts exactly and needs none of it).
DROP FUNCTION sluice.estimated_events(integer, xid8);
DROP FUNCTION sluice.estimated_tasks(integer, sluice.task_state);
DROP STATISTICS sluice.tasks_consumer_state;
DROP INDEX sluice.tasks_finished_state_idx;
