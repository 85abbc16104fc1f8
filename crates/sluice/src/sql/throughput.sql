-- Tasks completed and attempts failed per minute over the last $3 minutes
-- (the current one included), oldest first, zeros where nothing was
-- reported: of consumer $2 of stream $1; of every consumer of stream $1
-- when $2 is null; of every consumer when both are null.
SELECT m.minute, coalesce(sum(t.completed), 0)::bigint AS completed, coalesce(sum(t.failed), 0)::bigint AS failed
FROM generate_series(date_trunc('minute', now()) - ($3 - 1) * interval '1 minute',
                     date_trunc('minute', now()), interval '1 minute') AS m (minute)
LEFT JOIN (sluice.throughput t
           JOIN sluice.consumers c ON c.id = t.consumer_id AND ($2::text IS NULL OR c.name = $2)
           JOIN sluice.streams s ON s.id = c.stream_id AND ($1::text IS NULL OR s.name = $1))
       ON t.minute = m.minute
GROUP BY m.minute
ORDER BY m.minute
