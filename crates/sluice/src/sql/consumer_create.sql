-- Creates a consumer unless one of that name exists on the stream. Returns
-- the new id only when this call created it. Start: $4 'beginning' is a
-- snapshot that sees nothing, 'now' the current one, 'time' the beginning
-- with events before $5 filtered out.
INSERT INTO sluice.consumers (stream_id, name, include_subjects, exclude_subjects, position, start_from,
                              max_attempts, backoff_initial, backoff_max, lease, completed_retention,
                              dead_retention, log_retention)
SELECT s.id, $2, $3, $6,
       CASE WHEN $4 = 'now' THEN pg_current_snapshot() ELSE '1:1:'::pg_snapshot END,
       CASE WHEN $4 = 'time' THEN $5::timestamptz END,
       $7, $8 * interval '1 millisecond', $9 * interval '1 millisecond',
       $10 * interval '1 millisecond', $11 * interval '1 millisecond',
       $12 * interval '1 millisecond', $13 * interval '1 millisecond'
FROM sluice.streams s
WHERE s.name = $1
ON CONFLICT (stream_id, name) DO NOTHING
RETURNING id
