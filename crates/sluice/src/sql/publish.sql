-- Appends a batch of events to stream $1 in one statement, in input order,
-- and, when $8, notifies the stream's channel. Most publishes do not: a
-- transaction that has notified takes a cluster-wide lock at its commit, so
-- the caller's limiter lets one publish per stream in a few milliseconds
-- carry the notification (see publish.rs). Returns the new ids in input
-- order; no row when the stream does not exist.
WITH s AS (
    SELECT id FROM sluice.streams WHERE name = $1
),
ins AS (
    INSERT INTO sluice.events (stream_id, subject, payload, metadata, key, priority, deliver_at)
    SELECT s.id, e.subject, e.payload::jsonb, e.metadata::jsonb, e.key, e.priority, e.deliver_at
    FROM s, unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int2[], $7::timestamptz[])
            WITH ORDINALITY AS e(subject, payload, metadata, key, priority, deliver_at, ord)
    ORDER BY e.ord
    RETURNING id, stream_id
)
SELECT s.id AS stream_id,
       (SELECT array_agg(ins.id ORDER BY ins.id) FROM ins) AS ids,
       (SELECT count(*) FROM (SELECT pg_notify('sluice.' || s.id, '') FROM ins WHERE $8 LIMIT 1) AS n) AS notified
FROM s
