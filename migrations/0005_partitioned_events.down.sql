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

SELECT sluice.copy_table_access('sluice.events_partitioned', 'sluice.events');

DROP TABLE sluice.events_partitioned;
ALTER SEQUENCE sluice.event_id_unpartitioned RENAME TO event_id;
DROP TABLE sluice.event_partitioning;
DROP TABLE sluice.event_partitions;
DROP FUNCTION sluice.copy_table_access(regclass, regclass);
