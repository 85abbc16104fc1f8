-- The event of the task of consumer $2 of stream $1 for event $3, reached
-- through the task's event_txid (events are partitioned by transaction id:
-- by id alone every partition would be searched).
SELECT e.id, e.subject, e.payload::text AS payload, e.metadata::text AS metadata, e.key, e.priority,
       e.deliver_at, e.created_at
FROM sluice.tasks t
JOIN sluice.consumers c ON c.id = t.consumer_id
JOIN sluice.streams s ON s.id = c.stream_id
JOIN sluice.events e ON e.txid = t.event_txid AND e.id = t.event_id
WHERE s.name = $1 AND c.name = $2 AND t.event_id = $3
