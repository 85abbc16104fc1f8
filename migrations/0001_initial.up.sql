-- Sluice's data model: streams of events, consumers holding a snapshot position
-- in a stream, and one task per (consumer, matching event).
--
-- The schema `sluice` and the history table `sluice._migrations` are created by
-- the migration runner before this file runs.

-- ---------------------------------------------------------------------------
-- Names and subjects
-- ---------------------------------------------------------------------------

-- Stream and consumer names: 1-64 characters, letters, digits, '_' and '-',
-- starting with a letter or digit. The Rust validation says the same.
CREATE FUNCTION sluice.valid_name(name text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$';

-- Subjects are dot-separated tokens of letters, digits, '_' and '-'.
CREATE FUNCTION sluice.valid_subject(subject text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN length(subject) <= 255 AND subject ~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$';

-- Patterns are subjects whose tokens may also be '*' (exactly one token) or,
-- as the last token only, '>' (one or more tokens): NATS wildcards.
CREATE FUNCTION sluice.valid_patterns(patterns text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN NOT EXISTS (
    SELECT 1 FROM unnest(patterns) AS p
    WHERE p IS NULL
       OR length(p) > 255
       OR p !~ '^([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.>)?$|^>$'
);

-- One anchored regular expression for a list of patterns, NULL for an empty
-- list. Tokens cannot hold regex metacharacters (valid_patterns), so only the
-- wildcards and the dots need translating.
CREATE FUNCTION sluice.patterns_regex(patterns text[]) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (
    SELECT '^(' || string_agg(
               replace(replace(replace(p, '.', '\.'), '*', '[^.]+'), '>', '.+'),
               '|' ORDER BY p) || ')$'
    FROM unnest(patterns) AS p
);

-- ---------------------------------------------------------------------------
-- Streams and events
-- ---------------------------------------------------------------------------

CREATE TABLE sluice.streams (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE CONSTRAINT streams_name_valid CHECK (sluice.valid_name(name)),
    -- Events older than this are removed once no task of theirs is pending.
    event_retention interval NOT NULL DEFAULT '7 days'
                    CONSTRAINT streams_event_retention_positive CHECK (event_retention > interval '0'),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sluice.events (
    -- The sequence also hands out task queue positions (see tasks.position).
    id         bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME sluice.event_id) PRIMARY KEY,
    stream_id  integer NOT NULL REFERENCES sluice.streams (id) ON DELETE CASCADE,
    -- The writing transaction: consumer positions are snapshots, and an event
    -- is delivered once its transaction is visible in a snapshot.
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

-- Serves the refill: the events of one stream in (txid, id) order.
CREATE INDEX events_stream_txid_idx ON sluice.events (stream_id, txid, id);
-- Tells the refill whether a window holds any prioritized event.
CREATE INDEX events_prioritized_idx ON sluice.events (stream_id, txid) WHERE priority > 1;

-- ---------------------------------------------------------------------------
-- Consumers
-- ---------------------------------------------------------------------------

CREATE TABLE sluice.consumers (
    id                  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id           integer NOT NULL REFERENCES sluice.streams (id) ON DELETE CASCADE,
    name                text NOT NULL CONSTRAINT consumers_name_valid CHECK (sluice.valid_name(name)),
    include_subjects    text[] NOT NULL DEFAULT '{>}'
                        CONSTRAINT consumers_include_valid
                        CHECK (cardinality(include_subjects) BETWEEN 1 AND 100 AND sluice.valid_patterns(include_subjects)),
    exclude_subjects    text[] NOT NULL DEFAULT '{}'
                        CONSTRAINT consumers_exclude_valid
                        CHECK (cardinality(exclude_subjects) <= 100 AND sluice.valid_patterns(exclude_subjects)),
    include_regex       text GENERATED ALWAYS AS (sluice.patterns_regex(include_subjects)) STORED,
    exclude_regex       text GENERATED ALWAYS AS (sluice.patterns_regex(exclude_subjects)) STORED,
    -- Start at a time: only events created at or after it are delivered.
    start_from          timestamptz,
    -- The position: every event whose transaction is visible in this snapshot
    -- has been materialized. Starting at the beginning is a snapshot that
    -- sees nothing ('1:1:'), starting now is the snapshot at creation.
    position            pg_snapshot NOT NULL,
    -- A large window (position .. window_end) is materialized in chunks;
    -- (window_txid, window_id) is the last event of the window done so far.
    window_end          pg_snapshot,
    window_txid         xid8,
    window_id           bigint,
    max_attempts        integer NOT NULL DEFAULT 25
                        CONSTRAINT consumers_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 1000),
    backoff_initial     interval NOT NULL DEFAULT '1 second'
                        CONSTRAINT consumers_backoff_initial_positive CHECK (backoff_initial >= interval '0'),
    backoff_max         interval NOT NULL DEFAULT '1 hour'
                        CONSTRAINT consumers_backoff_max_valid CHECK (backoff_max >= backoff_initial),
    -- Visibility timeout: how long a claimed task belongs to its worker
    -- unless the worker extends it.
    lease               interval NOT NULL DEFAULT '30 seconds'
                        CONSTRAINT consumers_lease_range CHECK (lease >= interval '1 second'),
    -- How long completed tasks are kept; zero deletes them on ack.
    completed_retention interval NOT NULL DEFAULT '0'
                        CONSTRAINT consumers_completed_retention_valid CHECK (completed_retention >= interval '0'),
    paused              boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT consumers_stream_name_key UNIQUE (stream_id, name),
    CONSTRAINT consumers_window_complete
        CHECK ((window_end IS NULL) = (window_txid IS NULL) AND (window_txid IS NULL) = (window_id IS NULL))
);

-- ---------------------------------------------------------------------------
-- Tasks
-- ---------------------------------------------------------------------------

CREATE TYPE sluice.task_state AS ENUM (
    'scheduled', 'available', 'running', 'completed', 'discarded', 'cancelled'
);


CREATE TABLE sluice.tasks (
    -- No foreign keys on the hot table: a key check runs per inserted row and
    -- costs as much as the insert itself (measured on the claim path), and the
    -- check on events would also lock each event row once per consumer. Tasks
    -- are only made by sluice.fetch from the consumer's own row and existing
    -- events; deleting a consumer deletes its tasks (tasks_cascade below), and
    -- event retention removes an event only after its tasks.
    consumer_id integer NOT NULL,
    event_id    bigint NOT NULL,
    state       sluice.task_state NOT NULL DEFAULT 'available',
    priority    smallint NOT NULL DEFAULT 1 CONSTRAINT tasks_priority_range CHECK (priority BETWEEN 1 AND 5),
    -- Queue position, shared with event ids: a new task takes its event's
    -- id, a requeue at the end or a task coming back from its schedule takes
    -- the next event id (after every event published so far, materialized
    -- or not), a requeue at the start its negation (before all of them).
    position    bigint NOT NULL,
    -- Attempts started; the fencing token of ack, nack and defer.
    attempt     integer NOT NULL DEFAULT 0 CONSTRAINT tasks_attempt_nonnegative CHECK (attempt >= 0),
    schedule_at timestamptz,
    lease_until timestamptz,
    worker_id   uuid,
    -- One object per failed attempt: {attempt, at, error, worker}.
    errors      jsonb NOT NULL DEFAULT '[]' CONSTRAINT tasks_errors_array CHECK (jsonb_typeof(errors) = 'array'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (consumer_id, event_id),
    CONSTRAINT tasks_scheduled_has_time CHECK (state <> 'scheduled' OR schedule_at IS NOT NULL),
    CONSTRAINT tasks_running_has_lease
        CHECK (state <> 'running' OR (lease_until IS NOT NULL AND worker_id IS NOT NULL AND attempt > 0))
) WITH (
    -- Update-heavy: leave room for updates on the page and vacuum early.
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- The claim: a consumer's available tasks, highest priority first, then position.
CREATE INDEX tasks_claim_idx ON sluice.tasks (consumer_id, priority DESC, position)
    WHERE state = 'available';
-- The scheduler: scheduled tasks by due time.
CREATE INDEX tasks_schedule_idx ON sluice.tasks (consumer_id, schedule_at)
    WHERE state = 'scheduled';
-- The rescuer: running tasks by lease end.
CREATE INDEX tasks_lease_idx ON sluice.tasks (consumer_id, lease_until)
    WHERE state = 'running';
-- What ON DELETE CASCADE would do, had tasks a foreign key to consumers.
CREATE FUNCTION sluice.delete_consumer_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM sluice.tasks WHERE consumer_id = OLD.id;
    RETURN OLD;
END;
$$;

CREATE TRIGGER tasks_cascade BEFORE DELETE ON sluice.consumers
    FOR EACH ROW EXECUTE FUNCTION sluice.delete_consumer_tasks();

-- Dead letters and finished tasks, for inspection and retention.
CREATE INDEX tasks_finished_idx ON sluice.tasks (consumer_id, finished_at)
    WHERE state IN ('completed', 'discarded', 'cancelled');

-- ---------------------------------------------------------------------------
-- Audit log and workers
-- ---------------------------------------------------------------------------

CREATE TYPE sluice.task_action AS ENUM (
    'failed',           -- handler error, another attempt scheduled
    'discarded',        -- dead-lettered: nack(discard), no retry, or attempts exhausted
    'requeued_start',
    'requeued_end',
    'deferred',
    'cancelled',
    'lease_expired',    -- the worker lost its lease or died; the task came back
    'released',         -- handed back by a worker shutting down
    'retried'           -- retried by hand
);

CREATE TABLE sluice.task_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer_id integer NOT NULL REFERENCES sluice.consumers (id) ON DELETE CASCADE,
    event_id    bigint NOT NULL,
    attempt     integer NOT NULL,
    action      sluice.task_action NOT NULL,
    reason      text,
    priority    smallint,
    schedule_at timestamptz,
    worker_id   uuid,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX task_log_task_idx ON sluice.task_log (consumer_id, event_id, id);

CREATE TYPE sluice.worker_status AS ENUM ('active', 'idle', 'stopping');

CREATE TABLE sluice.workers (
    id           uuid PRIMARY KEY,
    consumer_id  integer NOT NULL REFERENCES sluice.consumers (id) ON DELETE CASCADE,
    host         text NOT NULL,
    pid          integer NOT NULL,
    status       sluice.worker_status NOT NULL DEFAULT 'active',
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX workers_consumer_idx ON sluice.workers (consumer_id, heartbeat_at);

-- ---------------------------------------------------------------------------
-- Refill: move a consumer's position forward and materialize its tasks
-- ---------------------------------------------------------------------------

-- The subscriber's one round trip: move the consumer's position forward and
-- claim up to p_limit tasks for worker p_worker with lease p_lease.
--
-- The window is every event whose transaction is visible in the current
-- snapshot but was not in the stored position. Only transactions in progress
-- at the position (its xip) or started after it (>= its xmax) can hold such
-- events, so the scan follows new events, not the age of the oldest open
-- transaction. A window larger than one call's limit is worked through in
-- (txid, id) order, remembering the last event done (window_txid, window_id).
--
-- Each call materializes at most p_chunk events. When the consumer has no
-- available task (the common case for a consumer that keeps up), the best
-- p_limit of them by priority are inserted already leased to the caller:
-- the same tasks the claim would have picked, but the event, the task and
-- the ack are the only rows written. Otherwise they queue up as available
-- and the claim takes the best available tasks by priority.
--
-- p_refill false skips the window (claim only). Only one session refills a
-- consumer at a time: busy means another holds its row (SKIP LOCKED).
-- more: the window was cut at the limit; call again to continue it.
-- Claimed tasks come back as parallel arrays, unordered.
CREATE FUNCTION sluice.fetch(p_consumer integer, p_worker uuid, p_lease interval, p_limit integer,
                             p_chunk integer, p_refill boolean,
                             OUT materialized integer, OUT more boolean, OUT busy boolean,
                             OUT event_ids bigint[], OUT attempts integer[], OUT priorities smallint[],
                             OUT positions bigint[], OUT subjects text[], OUT payloads text[],
                             OUT metadata text[], OUT keys text[], OUT created_ats timestamptz[])
LANGUAGE plpgsql
-- Plan each statement for the call's own values: the cached generic plans,
-- built from estimates on a table whose statistics lag its churn, drained
-- several times slower (sluice-bench drain: ~7k/s generic, ~41k/s custom).
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    c         sluice.consumers%ROWTYPE;
    v_end     pg_snapshot;
    v_xip     xid8[];
    v_hungry  boolean;
    v_limit   integer;
    v_scanned integer;
    v_txid    xid8;
    v_id      bigint;
    v_paused  boolean;
BEGIN
    materialized := 0;
    more := false;
    busy := false;
    event_ids := '{}';
    attempts := '{}';
    priorities := '{}';
    positions := '{}';
    subjects := '{}';
    payloads := '{}';
    metadata := '{}';
    keys := '{}';
    created_ats := '{}';

    IF p_refill THEN
        SELECT * INTO c FROM sluice.consumers WHERE id = p_consumer FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            IF NOT EXISTS (SELECT 1 FROM sluice.consumers WHERE id = p_consumer) THEN
                RAISE EXCEPTION 'sluice: consumer % does not exist', p_consumer USING ERRCODE = 'no_data_found';
            END IF;
            busy := true;
        END IF;
    END IF;

    IF p_refill AND NOT busy THEN
        v_paused := c.paused;
        v_end := coalesce(c.window_end, pg_current_snapshot());
        v_xip := ARRAY(SELECT pg_snapshot_xip(c.position));
        v_hungry := p_worker IS NOT NULL AND p_limit > 0 AND NOT c.paused
                    AND NOT EXISTS (SELECT 1 FROM sluice.tasks t
                                    WHERE t.consumer_id = p_consumer AND t.state = 'available');
        -- A hungry caller takes the chunk's best p_limit by priority. When
        -- every event of the window has the default priority, those are its
        -- first p_limit events, so only they need materializing: everything
        -- written is leased at once and the next call is hungry again. The
        -- check reads a partial index that holds only prioritized events.
        v_limit := p_chunk;
        IF v_hungry AND NOT EXISTS (
            SELECT 1 FROM sluice.events e
            WHERE e.stream_id = c.stream_id AND e.priority > 1
              AND (e.txid = ANY (v_xip)
                   OR e.txid >= greatest(pg_snapshot_xmax(c.position), coalesce(c.window_txid, '0'::xid8)))
              AND e.txid < pg_snapshot_xmax(v_end))
        THEN
            v_limit := least(p_limit, p_chunk);
        END IF;

        -- The window's next events in (txid, id) order.
        WITH win AS (
            SELECT u.* FROM (
                -- Transactions that were in progress at the position.
                (SELECT e.id, e.txid, e.subject, e.priority, e.deliver_at, e.created_at
                 FROM sluice.events e
                 WHERE e.stream_id = c.stream_id
                   AND e.txid = ANY (v_xip)
                   AND pg_visible_in_snapshot(e.txid, v_end)
                   AND (e.txid, e.id) > (coalesce(c.window_txid, '0'::xid8), coalesce(c.window_id, 0))
                 ORDER BY e.txid, e.id
                 LIMIT v_limit)
                UNION ALL
                -- Transactions that started after it, up to the window's end.
                (SELECT e.id, e.txid, e.subject, e.priority, e.deliver_at, e.created_at
                 FROM sluice.events e
                 WHERE e.stream_id = c.stream_id
                   AND e.txid >= greatest(pg_snapshot_xmax(c.position), coalesce(c.window_txid, '0'::xid8))
                   AND e.txid < pg_snapshot_xmax(v_end)
                   AND pg_visible_in_snapshot(e.txid, v_end)
                   AND (e.txid, e.id) > (coalesce(c.window_txid, '0'::xid8), coalesce(c.window_id, 0))
                 ORDER BY e.txid, e.id
                 LIMIT v_limit)
            ) AS u
            ORDER BY u.txid, u.id
            LIMIT v_limit
        ),
        ins AS (
            INSERT INTO sluice.tasks (consumer_id, event_id, state, priority, schedule_at, position,
                                      attempt, worker_id, lease_until)
            SELECT c.id, m.id, m.state, m.priority,
                   CASE WHEN m.state = 'scheduled' THEN m.deliver_at END,
                   m.id,
                   CASE WHEN m.state = 'running' THEN 1 ELSE 0 END,
                   CASE WHEN m.state = 'running' THEN p_worker END,
                   CASE WHEN m.state = 'running' THEN now() + p_lease END
            FROM (
                -- The best p_limit of the chunk go to the caller at once, as
                -- the claim would have picked them; the rest queue up.
                SELECT w.id, w.priority, w.deliver_at,
                       CASE WHEN w.deliver_at > now() THEN 'scheduled'
                            WHEN v_hungry AND row_number() OVER (
                                     PARTITION BY coalesce(w.deliver_at > now(), false)
                                     ORDER BY w.priority DESC, w.id) <= p_limit THEN 'running'
                            ELSE 'available' END::sluice.task_state AS state
                FROM win w
                WHERE w.subject ~ c.include_regex
                  AND (c.exclude_regex IS NULL OR w.subject !~ c.exclude_regex)
                  AND (c.start_from IS NULL OR w.created_at >= c.start_from)
            ) AS m
            ON CONFLICT (consumer_id, event_id) DO NOTHING
            RETURNING event_id, state, attempt, priority, position
        ),
        leased AS (
            -- By primary key: the estimates of these CTEs are too rough for a
            -- join between them (it came out as a nested loop of 500 x 500).
            SELECT i.event_id, i.attempt, i.priority, i.position, e.subject, e.payload::text AS payload,
                   e.metadata::text AS metadata, e.key, e.created_at
            FROM ins i JOIN sluice.events e ON e.id = i.event_id
            WHERE i.state = 'running'
        ),
        last AS (
            SELECT w.txid, w.id FROM win w ORDER BY w.txid DESC, w.id DESC LIMIT 1
        )
        SELECT (SELECT count(*) FROM win), (SELECT count(*) FROM ins), last.txid, last.id,
               coalesce((SELECT array_agg(l.event_id) FROM leased l), '{}'),
               coalesce((SELECT array_agg(l.attempt) FROM leased l), '{}'),
               coalesce((SELECT array_agg(l.priority) FROM leased l), '{}'),
               coalesce((SELECT array_agg(l.position) FROM leased l), '{}'),
               coalesce((SELECT array_agg(l.subject) FROM leased l), '{}'),
               coalesce((SELECT array_agg(l.payload) FROM leased l), '{}'),
               coalesce((SELECT array_agg(l.metadata) FROM leased l), '{}'),
               coalesce((SELECT array_agg(l.key) FROM leased l), '{}'),
               coalesce((SELECT array_agg(l.created_at) FROM leased l), '{}')
        INTO v_scanned, materialized, v_txid, v_id,
             event_ids, attempts, priorities, positions, subjects, payloads, metadata, keys, created_ats
        FROM (SELECT 1) AS one LEFT JOIN last ON true;

        IF v_scanned < v_limit THEN
            UPDATE sluice.consumers
            SET position = v_end, window_end = NULL, window_txid = NULL, window_id = NULL
            WHERE id = c.id;
        ELSE
            more := true;
            UPDATE sluice.consumers
            SET window_end = v_end, window_txid = v_txid, window_id = v_id
            WHERE id = c.id;
        END IF;
    ELSIF p_limit > 0 THEN
        SELECT co.paused INTO v_paused FROM sluice.consumers co WHERE co.id = p_consumer;
    END IF;

    -- The rest from the queue: best priority first, then position. SKIP
    -- LOCKED lets competing workers claim disjoint tasks without waiting.
    IF p_limit > cardinality(event_ids) AND p_worker IS NOT NULL AND NOT coalesce(v_paused, true) THEN
        WITH picked AS (
            SELECT t.consumer_id, t.event_id
            FROM sluice.tasks t
            WHERE t.consumer_id = p_consumer AND t.state = 'available'
            ORDER BY t.priority DESC, t.position
            LIMIT p_limit - cardinality(event_ids)
            FOR UPDATE SKIP LOCKED
        ),
        claimed AS (
            UPDATE sluice.tasks t
            SET state = 'running', attempt = t.attempt + 1, worker_id = p_worker, lease_until = now() + p_lease
            FROM picked p
            WHERE t.consumer_id = p.consumer_id AND t.event_id = p.event_id
            RETURNING t.event_id, t.attempt, t.priority, t.position
        ),
        full_rows AS (
            SELECT cl.event_id, cl.attempt, cl.priority, cl.position, e.subject, e.payload::text AS payload,
                   e.metadata::text AS metadata, e.key, e.created_at
            FROM claimed cl JOIN sluice.events e ON e.id = cl.event_id
        )
        SELECT event_ids || coalesce((SELECT array_agg(f.event_id) FROM full_rows f), '{}'),
               attempts || coalesce((SELECT array_agg(f.attempt) FROM full_rows f), '{}'),
               priorities || coalesce((SELECT array_agg(f.priority) FROM full_rows f), '{}'),
               positions || coalesce((SELECT array_agg(f.position) FROM full_rows f), '{}'),
               subjects || coalesce((SELECT array_agg(f.subject) FROM full_rows f), '{}'),
               payloads || coalesce((SELECT array_agg(f.payload) FROM full_rows f), '{}'),
               metadata || coalesce((SELECT array_agg(f.metadata) FROM full_rows f), '{}'),
               keys || coalesce((SELECT array_agg(f.key) FROM full_rows f), '{}'),
               created_ats || coalesce((SELECT array_agg(f.created_at) FROM full_rows f), '{}')
        INTO event_ids, attempts, priorities, positions, subjects, payloads, metadata, keys, created_ats;
    END IF;
END;
$$;

-- Materializes at most p_limit events of the consumer's window as available
-- tasks, claiming nothing: sluice.fetch without a worker.
CREATE FUNCTION sluice.refill(p_consumer integer, p_limit integer,
                              OUT materialized integer, OUT more boolean, OUT busy boolean)
LANGUAGE sql AS $$
    SELECT f.materialized, f.more, f.busy FROM sluice.fetch(p_consumer, NULL, NULL, 0, p_limit, true) AS f
$$;
