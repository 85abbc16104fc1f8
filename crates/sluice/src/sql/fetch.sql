-- One round trip of the subscriber: refill consumer $1 (when $6) and claim up
-- to $4 tasks for worker $2 with a lease of $3 ms, materializing at most $5
-- events. See sluice.fetch in the migrations.
SELECT materialized, more, busy, event_ids, attempts, priorities, positions, subjects, payloads, metadata, keys,
       created_ats
FROM sluice.fetch($1, $2, $3 * interval '1 millisecond', $4, $5, $6)
