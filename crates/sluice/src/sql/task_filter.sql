-- The tasks of consumer $1 that a filter selects, with their event's
-- subject: event ids $2 (all when null), states $3 (all when null), a
-- subject regex $4 (sluice.patterns_regex of one pattern; all when null),
-- made more than $5 ms ago (any age when null), whose event's payload
-- contains the JSON $6 and whose metadata contains the JSON object $7 (any
-- when null; `@>` containment). The statements that include this one
-- (task_list, task_count, task_retry, task_set_aside) continue it after
-- the event id $8.
WITH matching AS (
    SELECT t.consumer_id, t.event_id, t.state, t.priority, t.attempt, t.schedule_at, t.lease_until,
           t.worker_id, t.errors, t.created_at, t.finished_at, e.subject
    FROM sluice.tasks t
    JOIN sluice.events e ON e.txid = t.event_txid AND e.id = t.event_id
    WHERE t.consumer_id = $1
      AND ($2::bigint[] IS NULL OR t.event_id = ANY ($2))
      AND ($3::text[] IS NULL OR t.state::text = ANY ($3))
      AND ($4::text IS NULL OR e.subject ~ sluice.patterns_regex(ARRAY[$4::text]))
      AND ($5::bigint IS NULL OR t.created_at < now() - $5 * interval '1 millisecond')
      AND ($6::jsonb IS NULL OR e.payload @> $6)
      AND ($7::jsonb IS NULL OR e.metadata @> $7)
      AND t.event_id > $8
)
