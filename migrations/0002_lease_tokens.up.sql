-- Lease tokens, liveness by heartbeat with each worker's own limit, replay
-- from an event id, and the row type claimed tasks come back as.
--
-- Stored functions whose body changes with the claim logic no longer live
-- here: they are in migrations/functions/, re-applied by the runner whenever
-- their text changes (see docs/DESIGN.md, "Migrations").

-- Every claim, and every task inserted already leased, takes a fresh token
-- from this sequence, and every statement that finishes or releases a task
-- names it. It is never reset (not by a manual retry either), so a holder
-- whose lease was lost can never settle a later attempt. `attempt` only counts.
CREATE SEQUENCE sluice.lease_token AS bigint;

-- Only new rows take the default, so adding the column rewrites nothing;
-- tasks running at upgrade time get a token below.
ALTER TABLE sluice.tasks ADD COLUMN lease_token bigint;
ALTER TABLE sluice.tasks ALTER COLUMN lease_token SET DEFAULT nextval('sluice.lease_token');
UPDATE sluice.tasks SET lease_token = nextval('sluice.lease_token') WHERE state = 'running';

-- A worker proves it is alive by its heartbeat, and says itself how long a
-- silence means it is dead: one process's setting never judges another's.
ALTER TABLE sluice.workers ADD COLUMN dead_after interval NOT NULL DEFAULT '15 seconds'
    CONSTRAINT workers_dead_after_positive CHECK (dead_after > interval '0');

-- Replay from an event (reset_position): events with smaller ids are skipped.
ALTER TABLE sluice.consumers ADD COLUMN start_event bigint
    CONSTRAINT consumers_start_event_positive CHECK (start_event > 0);

-- What sluice.fetch_v2 hands out for each claimed task.
CREATE TYPE sluice.claimed_task AS (
    event_id    bigint,
    lease_token bigint,
    attempt     integer,
    priority    smallint,
    position    bigint,
    subject     text,
    payload     text,
    metadata    text,
    key         text,
    created_at  timestamptz
);
