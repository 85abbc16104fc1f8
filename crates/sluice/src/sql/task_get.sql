-- One task of consumer $2 of stream $1, for event $3, with its event.
SELECT t.event_id, t.state::text AS state, t.priority, t.attempt, t.schedule_at, t.lease_until, t.worker_id,
       t.errors::text AS errors, t.created_at, t.finished_at, e.subject
FROM sluice.tasks t
JOIN sluice.consumers c ON c.id = t.consumer_id
JOIN sluice.streams s ON s.id = c.stream_id
JOIN sluice.events e ON e.txid = t.event_txid AND e.id = t.event_id
WHERE s.name = $1 AND c.name = $2 AND t.event_id = $3
