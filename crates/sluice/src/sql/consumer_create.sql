-- Creates consumer $2 of stream $1 unless one of that name exists there.
-- Settings as in consumer_update.sql ($3 to $11), then where it starts: $12
-- 'beginning' is a snapshot that sees nothing, 'now' the current one, 'time'
-- the beginning with events before $13 filtered out. Ordered by key $14,
-- holding keys on dead letters $15. Returns the new id only when this call
-- created it.
INSERT INTO sluice.consumers (stream_id, name, include_subjects, exclude_subjects, max_attempts, backoff_initial,
                              backoff_max, lease, completed_retention, dead_retention, log_retention,
                              position, start_from, ordered_by_key, hold_key_on_dead_letter)
SELECT s.id, $2, $3, $4, $5, $6 * interval '1 millisecond', $7 * interval '1 millisecond',
       $8 * interval '1 millisecond', $9 * interval '1 millisecond', $10 * interval '1 millisecond',
       $11 * interval '1 millisecond',
       CASE WHEN $12 = 'now' THEN pg_current_snapshot() ELSE '1:1:'::pg_snapshot END,
       CASE WHEN $12 = 'time' THEN $13::timestamptz END,
       $14, $15
FROM sluice.streams s
WHERE s.name = $1
ON CONFLICT (stream_id, name) DO NOTHING
RETURNING id
