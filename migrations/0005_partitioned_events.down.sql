-- Back to one unpartitioned sluice.events, as migration 1 made it, with
-- every row, grant and row-level security policy. The runner has dropped
-- the functions of migrations/functions/ that needed this migration.
ALTER TABLE sluice.events RENAME TO events_partitioned;
ALTER INDEX sluice.events_pkey RENAME TO events_partitioned_pkey;
ALTER INDEX sluice.events_stream_txid_idx RENAME TO events_partitioned_stream_txid_idx;
ALTER INDEX sluice.events_prioritized_idx RENAME TO events_partitioned_prioritized_idx;

CREATE TABLE sluice.events (
    id         bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME sluice.event_id_unpartitioned) PRIMARY KEY,
    stream_id  integer NOT NULL REFERENCES sluice.streams (id) ON DELETE CASCADE,
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
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_stream_txid_idx ON sluice.events (stream_id, txid, id);
CREATE INDEX events_prioritized_idx ON sluice.events (stream_id, txid) WHERE priority > 1;

INSERT INTO sluice.events (id, stream_id, txid, subject, payload, metadata, key, priority, deliver_at, created_at)
OVERRIDING SYSTEM VALUE
SELECT id, stream_id, txid, subject, payload, metadata, key, priority, deliver_at, created_at
FROM sluice.events_partitioned;
SELECT setval('sluice.event_id_unpartitioned', last_value, is_called) FROM sluice.event_id;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT grantee, privilege_type FROM information_schema.role_table_grants
             WHERE table_schema = 'sluice' AND table_name = 'events_partitioned' AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT %s ON sluice.events TO %I', g.privilege_type, g.grantee);
    END LOOP;
    FOR g IN SELECT grantee, privilege_type, column_name FROM information_schema.column_privileges
             WHERE table_schema = 'sluice' AND table_name = 'events_partitioned' AND grantee <> current_user
    LOOP
        EXECUTE format('GRANT %s (%I) ON sluice.events TO %I', g.privilege_type, g.column_name, g.grantee);
    END LOOP;
    FOR g IN SELECT * FROM pg_policies WHERE schemaname = 'sluice' AND tablename = 'events_partitioned'
    LOOP
        EXECUTE format('CREATE POLICY %I ON sluice.events AS %s FOR %s TO %s%s%s',
                       g.policyname, g.permissive, g.cmd,
                       (SELECT string_agg(quote_ident(r), ', ') FROM unnest(g.roles) AS r),
                       CASE WHEN g.qual IS NOT NULL THEN ' USING (' || g.qual || ')' ELSE '' END,
                       CASE WHEN g.with_check IS NOT NULL THEN ' WITH CHECK (' || g.with_check || ')' ELSE '' END);
    END LOOP;
    IF (SELECT relrowsecurity FROM pg_class WHERE oid = 'sluice.events_partitioned'::regclass) THEN
        ALTER TABLE sluice.events ENABLE ROW LEVEL SECURITY;
    END IF;
END;
$$;

DROP TABLE sluice.events_partitioned;
ALTER SEQUENCE sluice.event_id_unpartitioned RENAME TO event_id;
DROP TABLE sluice.event_partitioning;
DROP TABLE sluice.event_partitions;
