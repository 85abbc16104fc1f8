-- Changes how sluice.events is cut into partitions: span $1, partition age
-- $2 ms, maintenance interval $3 ms (each left as it is when null), and
-- makes the maintenance due at once, so that the partitions not yet written
-- into are made again (maintain_event_partitions). Returns the settings.
UPDATE sluice.event_partitioning
SET span = coalesce($1, span),
    max_age = coalesce($2 * interval '1 millisecond', max_age),
    every = coalesce($3 * interval '1 millisecond', every),
    last_run = '-infinity'
RETURNING span,
          (extract(epoch FROM max_age) * 1000)::bigint AS max_age_ms,
          (extract(epoch FROM every) * 1000)::bigint AS every_ms
