-- sluice.events becomes a table partitioned by transaction id (RANGE (txid)),
-- so that retention drops whole partitions instead of deleting rows, and the
-- refill, which reads events by transaction id, plans against the partitions
-- it needs only (docs/DESIGN.md, "Events and their partitions").
--
-- Upgrading: the existing rows are copied into the new table (one statement;
-- plan for the time a copy of the table takes), and the grants and
-- row-level security policies of the old table are given to the new one.
-- Stop every worker first, as for any migration of Sluice.

ALTER TABLE sluice.events RENAME TO events_unpartitioned;
ALTER INDEX sluice.events_pkey RENAME TO events_unpartitioned_pkey;
ALTER INDEX sluice.events_stream_txid_idx RENAME TO events_unpartitioned_stream_txid_idx;
ALTER INDEX sluice.events_prioritized_idx RENAME TO events_unpartitioned_prioritized_idx;

CREATE TABLE sluice.events (
    -- The sequence also hands out task queue positions (see tasks.position).
    id         bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME sluice.event_id_partitioned),
    stream_id  integer NOT NULL REFERENCES sluice.streams (id) ON DELETE CASCADE,
    -- The writing transaction: consumer positions are snapshots, and an event
    -- is delivered once its transaction is visible in a snapshot. Also the
    -- partition key.
    txid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    subject    text NOT NULL CONSTRAINT events_subject_valid CHECK (sluice.valid_subject(subject)),
    payload    jsonb NOT NULL,
    metadata   jsonb NOT NULL DEFAULT '{}'
               CONSTRAINT events_metadata_string_map
               CHECK (jsonb_typeof(metadata) = 'object'
                      AND NOT jsonb_path_exists(metadata, '$.* ? (@.type() != "string")')),
    key        text CONSTRAINT events_key_length CHECK (length(key) BETWEEN 1 AND 255),
    priority   smallint NOT NULL DEFAULT 1 CONSTRAINT events_priority_range CHECK (priority BETWEEN 1 AND 5),
    deliver_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (txid, id)
) PARTITION BY RANGE (txid);

-- Serves the refill: the events of one stream in (txid, id) order.
CREATE INDEX events_stream_txid_idx ON sluice.events (stream_id, txid, id);
-- Tells the refill whether a window holds any prioritized event.
CREATE INDEX events_prioritized_idx ON sluice.events (stream_id, txid) WHERE priority > 1;

-- The partitions: their ranges, and when each was sealed (every transaction
-- that could write into it had ended). sluice.maintain_event_partitions
-- (migrations/functions/) creates them ahead and drops them after retention.
CREATE TABLE sluice.event_partitions (
    name       text PRIMARY KEY,
    lo         xid8 NOT NULL,
    hi         xid8 NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sealed_at  timestamptz,
    CONSTRAINT event_partitions_range CHECK (lo < hi)
);

-- How many transaction ids a partition spans (one row). Retention drops
-- whole partitions, so a partition's span in time is the granularity of
-- event retention.
CREATE TABLE sluice.event_partitioning (
    span     bigint NOT NULL CONSTRAINT event_partitioning_span_positive CHECK (span > 0),
    -- How often the maintenance runs at most, and when it last ran.
    every    interval NOT NULL DEFAULT '5 seconds',
    last_run timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO sluice.event_partitioning (span) VALUES (1000000);

-- The first partition holds everything written so far, the next one the
-- next span; housekeeping keeps making them ahead. Anything beyond the
-- partitions lands in the default one until housekeeping moves it into a
-- partition of its own (a publish never fails for want of a partition).
DO $$
DECLARE
    v_hi   bigint := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
    v_next bigint := v_hi + (SELECT span FROM sluice.event_partitioning);
BEGIN
    EXECUTE format('CREATE TABLE sluice.events_0 PARTITION OF sluice.events FOR VALUES FROM (%L) TO (%L)',
                   '0', v_hi);
    EXECUTE format('CREATE TABLE sluice.%I PARTITION OF sluice.events FOR VALUES FROM (%L) TO (%L)',
                   'events_' || v_hi, v_hi, v_next);
    INSERT INTO sluice.event_partitions (name, lo, hi)
    VALUES ('events_0', '0', v_hi::text::xid8), ('events_' || v_hi, v_hi::text::xid8, v_next::text::xid8);
END;
$$;
CREATE TABLE sluice.events_default PARTITION OF sluice.events DEFAULT;

INSERT INTO sluice.events (id, stream_id, txid, subject, payload, metadata, key, priority, deliver_at, created_at)
OVERRIDING SYSTEM VALUE
SELECT id, stream_id, txid, subject, payload, metadata, key, priority, deliver_at, created_at
FROM sluice.events_unpartitioned;

-- The same numbering goes on: ids and queue positions come from one sequence.
SELECT setval('sluice.event_id_partitioned', last_value, is_called) FROM sluice.event_id;

-- Gives table dst what was granted on table src, its row-level security
-- policies and whether row-level security is on: a table copied by a
-- migration keeps the access rules set on the old one. Used by this
-- migration and its down.
CREATE FUNCTION sluice.copy_table_access(src regclass, dst regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g     record;
    s_ns  name := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = src);
    s_rel name := (SELECT c.relname FROM pg_class c WHERE c.oid = src);
BEGIN
    FOR g IN SELECT grantee, privilege_type FROM information_schema.role_table_grants
             WHERE table_schema = s_ns AND table_name = s_rel AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT %s ON %s TO %I', g.privilege_type, dst, g.grantee);
    END LOOP;
    FOR g IN SELECT grantee, privilege_type, column_name FROM information_schema.column_privileges
             WHERE table_schema = s_ns AND table_name = s_rel AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT %s (%I) ON %s TO %I', g.privilege_type, g.column_name, dst, g.grantee);
    END LOOP;
    FOR g IN SELECT * FROM pg_policies WHERE schemaname = s_ns AND tablename = s_rel
    LOOP
        EXECUTE format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s',
                       g.policyname, dst, g.permissive, g.cmd,
                       (SELECT string_agg(quote_ident(r), ', ') FROM unnest(g.roles) AS r),
                       CASE WHEN g.qual IS NOT NULL THEN ' USING (' || g.qual || ')' ELSE '' END,
                       CASE WHEN g.with_check IS NOT NULL THEN ' WITH CHECK (' || g.with_check || ')' ELSE '' END);
    END LOOP;
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = src) THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', dst);
    END IF;
END;
$$;

-- What was granted on the old table, and its row-level security.
SELECT sluice.copy_table_access('sluice.events_unpartitioned', 'sluice.events');

DROP TABLE sluice.events_unpartitioned;
ALTER SEQUENCE sluice.event_id_partitioned RENAME TO event_id;
