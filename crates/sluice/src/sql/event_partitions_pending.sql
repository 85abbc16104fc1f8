-- Whether the maintenance (maintain_event_partitions) still has to apply
-- the settings to the partitions: one not yet written into whose span is
-- not the set one, or the one written into now reaching further than a
-- span ahead, or due for a cut by age (written into longer than the
-- partition age, the larger of max_age and a hundredth of the longest event
-- retention, and holding an event).
WITH now_ AS (
    SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next, s.span,
           greatest(s.max_age, (SELECT coalesce(max(event_retention), interval '0') FROM sluice.streams) / 100) AS age
    FROM sluice.event_partitioning s
)
SELECT EXISTS (
    SELECT 1 FROM sluice.event_partitions p, now_ n
    WHERE NOT p.kept
      AND ((p.lo::text::bigint >= n.next AND p.hi::text::bigint - p.lo::text::bigint <> n.span)
           OR (p.lo::text::bigint < n.next AND n.next < p.hi::text::bigint
               AND (p.hi::text::bigint > n.next + n.span
                    OR (p.opened_at <= now() - n.age
                        AND EXISTS (SELECT 1 FROM sluice.events e
                                    WHERE e.txid >= p.lo AND e.txid < n.next::text::xid8)))))
)
