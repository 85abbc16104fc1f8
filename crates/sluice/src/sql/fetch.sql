-- One round trip of the subscriber: refill consumer $1 (when $6) and claim up
-- to $4 tasks for worker $2 with a lease of $3 ms, scanning at most $5 events
-- and holding at most about $7 bytes of payload. The first row is the status
-- (materialized, more, busy), the others the claimed tasks.
-- See migrations/functions/fetch_v2.sql.
SELECT materialized, more, busy, event_id, lease_token, attempt, priority, position, subject, payload, metadata,
       key, created_at
FROM sluice.fetch_v2($1, $2, $3 * interval '1 millisecond', $4, $5, $6, $7)
