-- The backlog behind docs/BENCHMARKS.md's "The queue's figures on a backlog":
-- stream `orders` with N events (psql variable :events, 10,000,000 there),
-- consumer `backlog` with a task available for each of them (its position
-- past them all), consumer `lagging` with none made yet (all N are its
-- lag), and 1,000 dead letters and 100 running tasks beside them.
-- Written straight into the tables with generate_series: this measures
-- what reading the figures costs, not how the backlog came to be.
-- Run on a migrated database with the stream and both consumers created
-- (crates/sluice-bench/stats/measure.sh does it all).
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO sluice.events (stream_id, subject, payload)
SELECT s.id, 'orders.eu.created', jsonb_build_object('n', g)
FROM sluice.streams s, generate_series(1, :events) AS g
WHERE s.name = 'orders';
COMMIT;

BEGIN;
INSERT INTO sluice.tasks (consumer_id, event_id, event_txid, state, position, created_at)
SELECT c.id, e.id, e.txid, 'available', e.id, e.created_at
FROM sluice.events e
JOIN sluice.consumers c ON c.stream_id = e.stream_id AND c.name = 'backlog';
UPDATE sluice.tasks t SET state = 'discarded', finished_at = now(), attempt = 1
FROM sluice.consumers c
WHERE c.id = t.consumer_id AND c.name = 'backlog' AND t.event_id % 10000 = 7;
UPDATE sluice.tasks t SET state = 'running', attempt = 1, lease_until = now() + interval '1 hour',
                          worker_id = gen_random_uuid()
FROM sluice.consumers c
WHERE c.id = t.consumer_id AND c.name = 'backlog' AND t.event_id % 100000 = 3;
UPDATE sluice.consumers SET position = pg_current_snapshot() WHERE name = 'backlog';
UPDATE sluice.consumers SET position = '1:1:' WHERE name = 'lagging';
COMMIT;
