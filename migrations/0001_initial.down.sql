-- Removes everything 0001_initial.up.sql created. The runner drops the
-- history table and the schema once no Sluice migration remains applied.
DROP FUNCTION sluice.refill(integer, integer);
DROP FUNCTION sluice.fetch(integer, uuid, interval, integer, integer, boolean);
DROP TABLE sluice.workers;
DROP TYPE sluice.worker_status;
DROP TABLE sluice.task_log;
DROP TYPE sluice.task_action;
DROP TABLE sluice.tasks;
DROP TYPE sluice.task_state;
DROP TABLE sluice.consumers;
DROP FUNCTION sluice.delete_consumer_tasks();
DROP TABLE sluice.events;
DROP TABLE sluice.streams;
DROP FUNCTION sluice.patterns_regex(text[]);
DROP FUNCTION sluice.valid_patterns(text[]);
DROP FUNCTION sluice.valid_subject(text);
DROP FUNCTION sluice.valid_name(text);
