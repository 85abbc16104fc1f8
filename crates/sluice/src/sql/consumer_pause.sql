-- Pauses ($3 true) or resumes ($3 false) consumer $2 of stream $1. A paused
-- consumer's subscribers keep running and claim nothing; their refills go on
-- materializing its events as available tasks, so nothing is missed and the
-- backlog shows. A resume notifies the stream's channel, so that subscribers
-- listening claim at once rather than at their next poll. Returns the
-- consumer's id; no row when it does not exist.
WITH c AS (
    UPDATE sluice.consumers c
    SET paused = $3, updated_at = now()
    FROM sluice.streams s
    WHERE s.id = c.stream_id AND s.name = $1 AND c.name = $2
    RETURNING c.id, c.stream_id
)
SELECT c.id,
       (SELECT count(*) FROM (SELECT pg_notify('sluice.' || c.stream_id, '') WHERE NOT $3) AS n) AS notified
FROM c
