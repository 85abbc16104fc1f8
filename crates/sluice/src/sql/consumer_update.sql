-- Changes the settings of consumer $2 of stream $1 (everything but where it
-- started): filters $3/$4, max attempts $5, backoff $6..$7 ms, lease $8 ms,
-- retentions $9 (completed), $10 (dead letters), $11 (log) in ms. Running
-- subscribers apply filters at their next refill and retentions at their
-- next housekeeping run. Returns the consumer's id; no row when it does not exist.
UPDATE sluice.consumers c
SET include_subjects = $3, exclude_subjects = $4, max_attempts = $5,
    backoff_initial = $6 * interval '1 millisecond', backoff_max = $7 * interval '1 millisecond',
    lease = $8 * interval '1 millisecond',
    completed_retention = $9 * interval '1 millisecond',
    dead_retention = $10 * interval '1 millisecond',
    log_retention = $11 * interval '1 millisecond',
    updated_at = now()
FROM sluice.streams s
WHERE s.id = c.stream_id AND s.name = $1 AND c.name = $2
RETURNING c.id
