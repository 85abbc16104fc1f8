//! Bad input: every refusal is a typed error that names what was refused,
//! and nothing stored changes — the rows of every Sluice table are the same
//! before and after each refused call.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use sluice::{
    cancel_task, create_consumer, create_stream, delete_consumer, delete_stream, get_consumer, get_stream, get_task,
    list_consumers, publish, publish_batch, retry_task, sub, task_log, ConsumerOptions, Defer, Error, EventId,
    InvalidInput, Message, Nack, NewEvent, Priority, Start, StreamOptions, Subscription, TaskError, TaskRef, TaskState,
    WorkerId, MAX_PAYLOAD_BYTES,
};
use sqlx::PgPool;
use support::TestDb;

// ---------------------------------------------------------------------------
// Snapshots of what is stored
// ---------------------------------------------------------------------------

/// Every row of every Sluice table, as JSON, in a stable order.
const TABLES: &[(&str, &str)] = &[
    ("streams", "SELECT count(*), coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id), '[]')::text FROM sluice.streams x"),
    (
        "consumers",
        "SELECT count(*), coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id), '[]')::text FROM sluice.consumers x",
    ),
    ("events", "SELECT count(*), coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id), '[]')::text FROM sluice.events x"),
    (
        "tasks",
        "SELECT count(*), coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.consumer_id, x.event_id), '[]')::text
         FROM sluice.tasks x",
    ),
    ("task_log", "SELECT count(*), coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id), '[]')::text FROM sluice.task_log x"),
    ("workers", "SELECT count(*), coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.id), '[]')::text FROM sluice.workers x"),
];

#[derive(Debug, PartialEq)]
struct Snapshot(Vec<(&'static str, i64, String)>);

async fn snapshot(pool: &PgPool) -> Snapshot {
    let mut tables = Vec::new();
    for (table, query) in TABLES {
        let (count, rows): (i64, String) = sqlx::query_as(query).fetch_one(pool).await.expect("snapshot");
        tables.push((*table, count, rows));
    }
    Snapshot(tables)
}

/// Asserts that nothing stored changed since `before`.
async fn unchanged(db: &TestDb, before: &Snapshot, what: &str) {
    let after = snapshot(&db.pool).await;
    for (b, a) in before.0.iter().zip(&after.0) {
        assert_eq!(b, a, "{what} changed the stored rows of sluice.{}", b.0);
    }
}

// ---------------------------------------------------------------------------
// Assertions on errors
// ---------------------------------------------------------------------------

/// `Error::Invalid(InvalidInput::Name)` for `name`, whose message quotes it.
#[track_caller]
fn bad_name<T: std::fmt::Debug>(result: Result<T, Error>, kind: &str, name: &str, call: &str) {
    match result {
        Err(e @ Error::Invalid(InvalidInput::Name { .. })) => {
            let Error::Invalid(InvalidInput::Name { kind: k, name: n, .. }) = &e else { unreachable!() };
            assert_eq!((*k, n.as_str()), (kind, name), "{call}: the error names the {kind} as given");
            let message = e.to_string();
            assert!(
                message.contains(&format!("invalid {kind} name {name:?}")),
                "{call}: the message names the {kind}: {message}"
            );
        }
        other => panic!("{call} with {kind} name {name:?}: expected Invalid(Name), got {other:?}"),
    }
}

/// `Error::Invalid(InvalidInput::Setting)` for `setting`, named in the message.
#[track_caller]
fn bad_setting<T: std::fmt::Debug>(result: Result<T, Error>, setting: &str, call: &str) {
    match result {
        Err(Error::Invalid(e @ InvalidInput::Setting { .. })) => {
            let InvalidInput::Setting { setting: s, .. } = &e else { unreachable!() };
            assert_eq!(*s, setting, "{call}");
            assert!(e.to_string().starts_with(&format!("invalid {setting}: ")), "{call}: {e}");
        }
        other => panic!("{call}: expected Invalid(Setting {setting:?}), got {other:?}"),
    }
}

/// `Error::TaskState` with the state, the action and the allowed states, all in the message.
#[track_caller]
fn wrong_state<T: std::fmt::Debug>(
    result: Result<T, Error>,
    event: EventId,
    consumer: &str,
    state: TaskState,
    action: &str,
    allowed: &str,
) {
    match result {
        Err(e @ Error::TaskState { .. }) => {
            let Error::TaskState { stream: s, consumer: c, event_id, state: st, action: a, allowed: al } = &e else {
                unreachable!()
            };
            assert_eq!(
                (s.as_str(), c.as_str(), *event_id, *st, *a, al.as_str()),
                ("jobs", consumer, event, state, action, allowed)
            );
            let message = e.to_string();
            for part in [
                format!("cannot {action}"),
                format!("event {event}"),
                format!("{consumer:?}"),
                "\"jobs\"".to_string(),
                format!("it is {state}"),
                format!("only {allowed}"),
            ] {
                assert!(message.contains(&part), "the message says {part:?}: {message}");
            }
        }
        other => panic!("{action} a {state} task: expected Error::TaskState, got {other:?}"),
    }
}

#[track_caller]
fn task_not_found<T: std::fmt::Debug>(result: Result<T, Error>, consumer: &str, event: EventId, call: &str) {
    match result {
        Err(e @ Error::TaskNotFound { .. }) => {
            let Error::TaskNotFound { stream, consumer: c, event_id } = &e else { unreachable!() };
            assert_eq!((stream.as_str(), c.as_str(), *event_id), ("jobs", consumer, event), "{call}");
            let message = e.to_string();
            assert!(
                message.contains(&format!("{consumer:?}"))
                    && message.contains("\"jobs\"")
                    && message.contains(&format!("event {event}")),
                "{call}: {message}"
            );
        }
        other => panic!("{call}: expected TaskNotFound, got {other:?}"),
    }
}

#[track_caller]
fn consumer_not_found<T: std::fmt::Debug>(result: Result<T, Error>, stream: &str, consumer: &str, call: &str) {
    match result {
        Err(e @ Error::ConsumerNotFound { .. }) => {
            let Error::ConsumerNotFound { stream: s, consumer: c } = &e else { unreachable!() };
            assert_eq!((s.as_str(), c.as_str()), (stream, consumer), "{call}");
            assert_eq!(e.to_string(), format!("consumer {consumer:?} of stream {stream:?} does not exist"), "{call}");
        }
        other => panic!("{call}: expected ConsumerNotFound, got {other:?}"),
    }
}

#[track_caller]
fn stream_not_found<T: std::fmt::Debug>(result: Result<T, Error>, stream: &str, call: &str) {
    match result {
        Err(e @ Error::StreamNotFound { .. }) => {
            let Error::StreamNotFound { stream: s } = &e else { unreachable!() };
            assert_eq!(s, stream, "{call}");
            assert_eq!(e.to_string(), format!("stream {stream:?} does not exist"), "{call}");
        }
        other => panic!("{call}: expected StreamNotFound, got {other:?}"),
    }
}

#[track_caller]
fn lease_lost<T: std::fmt::Debug>(result: Result<T, TaskError>, task: &TaskRef, call: &str) {
    match result {
        Err(e @ TaskError::LeaseLost { .. }) => {
            let TaskError::LeaseLost { consumer, event_id, attempt } = &e else { unreachable!() };
            assert_eq!((consumer.as_str(), *event_id, *attempt), (task.consumer.as_str(), task.event_id, task.attempt));
            let message = e.to_string();
            assert!(
                message.contains(&format!("event {}", task.event_id))
                    && message.contains(&format!("{:?}", task.consumer))
                    && message.contains(&format!("attempt {}", task.attempt)),
                "{call}: {message}"
            );
        }
        other => panic!("{call}: expected LeaseLost, got {other:?}"),
    }
}

/// The SQLSTATE and constraint of a refused raw statement.
async fn refused_by_schema(pool: &PgPool, statement: &str) -> (String, Option<String>) {
    match sqlx::query(statement).execute(pool).await {
        Err(sqlx::Error::Database(e)) => (e.code().unwrap_or_default().into_owned(), e.constraint().map(String::from)),
        other => panic!("{statement}: expected the schema to refuse it, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

fn job(n: i64) -> NewEvent {
    NewEvent::new("jobs.run", &json!({ "n": n })).unwrap()
}

/// Stream `jobs` with consumer `c`, and `n` events materialized as available tasks.
async fn jobs(db: &TestDb, n: i64) -> Vec<EventId> {
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default().start(Start::Beginning)).await.unwrap();
    let ids = publish_batch(&db.pool, "jobs", (0..n).map(job)).await.unwrap();
    refill(db, "c").await;
    ids
}

async fn consumer_id(db: &TestDb, consumer: &str) -> i32 {
    sqlx::query_scalar("SELECT id FROM sluice.consumers WHERE name = $1")
        .bind(consumer)
        .fetch_one(&db.pool)
        .await
        .expect("consumer id")
}

/// Materializes the consumer's tasks, as a subscriber's refill does.
async fn refill(db: &TestDb, consumer: &str) {
    let id = consumer_id(db, consumer).await;
    support::refill(&db.pool, id, 100000).await.expect("refill");
}

/// What a claim does: the task is running, held by a worker under a lease.
/// Done by hand: a subscriber's heartbeats would change rows under the snapshots.
async fn claim(db: &TestDb, consumer: &str, event: EventId) -> TaskRef {
    let consumer_id = consumer_id(db, consumer).await;
    let worker = uuid::Uuid::new_v4();
    let (attempt, lease_token): (i32, i64) = sqlx::query_as(
        "UPDATE sluice.tasks SET state = 'running', attempt = attempt + 1, worker_id = $3,
                lease_until = now() + interval '1 hour', lease_token = nextval('sluice.lease_token')
         WHERE consumer_id = $1 AND event_id = $2 AND state = 'available' RETURNING attempt, lease_token",
    )
    .bind(consumer_id)
    .bind(event.0)
    .bind(worker)
    .fetch_one(&db.pool)
    .await
    .expect("claim");
    TaskRef {
        stream: "jobs".into(),
        consumer: consumer.into(),
        consumer_id,
        event_id: event,
        attempt,
        lease_token,
        worker_id: WorkerId(worker),
    }
}

fn bad_names() -> Vec<String> {
    [
        "",
        "_leading-underscore",
        "-leading-dash",
        "a.b",
        "a b",
        " a",
        "a\t",
        "new\nline",
        "é",
        "名前",
        "emoji🙂",
        "x\"; DROP TABLE sluice.events; --",
        "x'; DROP TABLE sluice.events; --",
        "a;b",
        "nul\0byte",
        "a*",
        "a>",
        "a/b",
    ]
    .into_iter()
    .map(String::from)
    .chain(["a".repeat(65), "é".repeat(32), format!("{}é", "a".repeat(63))])
    .collect()
}

// ---------------------------------------------------------------------------
// Names, subjects, patterns, settings
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invalid_names_are_refused_by_every_call() {
    let db = TestDb::new().await;
    let ids = jobs(&db, 1).await;
    let before = snapshot(&db.pool).await;
    let p = &db.pool;
    let noop = |_: Message<Value>| async { Ok(()) };
    for bad in bad_names() {
        let bad = bad.as_str();
        bad_name(create_stream(p, bad, StreamOptions::default()).await, "stream", bad, "create_stream");
        bad_name(get_stream(p, bad).await, "stream", bad, "get_stream");
        bad_name(delete_stream(p, bad).await, "stream", bad, "delete_stream");
        bad_name(list_consumers(p, Some(bad)).await, "stream", bad, "list_consumers");
        bad_name(create_consumer(p, bad, "c", ConsumerOptions::default()).await, "stream", bad, "create_consumer");
        bad_name(create_consumer(p, "jobs", bad, ConsumerOptions::default()).await, "consumer", bad, "create_consumer");
        bad_name(get_consumer(p, bad, "c").await, "stream", bad, "get_consumer");
        bad_name(get_consumer(p, "jobs", bad).await, "consumer", bad, "get_consumer");
        bad_name(delete_consumer(p, bad, "c").await, "stream", bad, "delete_consumer");
        bad_name(delete_consumer(p, "jobs", bad).await, "consumer", bad, "delete_consumer");
        bad_name(publish(p, bad, job(1)).await, "stream", bad, "publish");
        bad_name(publish_batch(p, bad, [job(1), job(2)]).await, "stream", bad, "publish_batch");
        bad_name(publish_batch(p, bad, []).await, "stream", bad, "publish_batch (empty)");
        bad_name(get_task(p, bad, "c", ids[0]).await, "stream", bad, "get_task");
        bad_name(get_task(p, "jobs", bad, ids[0]).await, "consumer", bad, "get_task");
        bad_name(cancel_task(p, bad, "c", ids[0], None).await, "stream", bad, "cancel_task");
        bad_name(cancel_task(p, "jobs", bad, ids[0], None).await, "consumer", bad, "cancel_task");
        bad_name(retry_task(p, bad, "c", ids[0], None).await, "stream", bad, "retry_task");
        bad_name(retry_task(p, "jobs", bad, ids[0], None).await, "consumer", bad, "retry_task");
        bad_name(task_log(p, bad, "c", ids[0]).await, "stream", bad, "task_log");
        bad_name(task_log(p, "jobs", bad, ids[0]).await, "consumer", bad, "task_log");
        bad_name(sub(p, Subscription::new(bad, "c"), noop).await, "stream", bad, "sub");
        bad_name(sub(p, Subscription::new("jobs", bad), noop).await, "consumer", bad, "sub");
    }
    unchanged(&db, &before, "calls with invalid names").await;
}

#[tokio::test]
async fn invalid_subjects_patterns_and_settings_are_refused() {
    let db = TestDb::new().await;
    jobs(&db, 1).await;
    let before = snapshot(&db.pool).await;
    let p = &db.pool;

    let long_subject = format!("{}.b", "a".repeat(254));
    for bad in
        ["", ".a", "a.", "a..b", "a.*", "a.>", "*", ">", "a b", "a.é", "a.b\n", "a\0", "a;b", "a'b", &long_subject]
    {
        match NewEvent::new(bad, &json!({})) {
            Err(e @ InvalidInput::Subject { .. }) => {
                let InvalidInput::Subject { subject, .. } = &e else { unreachable!() };
                assert_eq!(subject, bad);
                assert!(e.to_string().starts_with(&format!("invalid subject {bad:?}: ")), "{e}");
            }
            other => panic!("subject {bad:?}: expected Invalid(Subject), got {other:?}"),
        }
    }

    let long_pattern = format!("{}>", "*.".repeat(128));
    for bad in ["", "a.>.b", "a..b", "a.b*", "a.>>", "**", "a.*b", " ", ">.a", "é", "a.\0", "a\"", &long_pattern] {
        for options in [ConsumerOptions::default().include([bad]), ConsumerOptions::default().exclude([bad])] {
            match create_consumer(p, "jobs", "p", options.start(Start::Beginning)).await {
                Err(Error::Invalid(e @ InvalidInput::Pattern { .. })) => {
                    let InvalidInput::Pattern { pattern, .. } = &e else { unreachable!() };
                    assert_eq!(pattern, bad);
                    assert!(e.to_string().starts_with(&format!("invalid subject pattern {bad:?}: ")), "{e}");
                }
                other => panic!("pattern {bad:?}: expected Invalid(Pattern), got {other:?}"),
            }
        }
    }

    let consumer = |options: ConsumerOptions| create_consumer(p, "jobs", "p", options);
    bad_setting(consumer(ConsumerOptions::default().include(Vec::<String>::new())).await, "include", "no include");
    bad_setting(consumer(ConsumerOptions::default().max_attempts(0)).await, "max_attempts", "max_attempts 0");
    bad_setting(consumer(ConsumerOptions::default().max_attempts(1001)).await, "max_attempts", "max_attempts 1001");
    bad_setting(consumer(ConsumerOptions::default().lease(Duration::from_millis(999))).await, "lease", "lease 999ms");
    let backwards = ConsumerOptions::default().backoff(Duration::from_secs(10), Duration::from_secs(1));
    bad_setting(consumer(backwards).await, "backoff", "backoff max < initial");
    let huge = ConsumerOptions::default().lease(Duration::MAX);
    bad_setting(consumer(huge).await, "lease", "lease Duration::MAX");
    let zero = StreamOptions::default().event_retention(Duration::ZERO);
    bad_setting(create_stream(p, "other", zero).await, "event_retention", "event_retention 0");
    let forever = StreamOptions::default().event_retention(Duration::MAX);
    bad_setting(create_stream(p, "other", forever).await, "event_retention", "event_retention Duration::MAX");

    for value in [0, 6, -1, 256] {
        match Priority::new(value) {
            Err(e @ InvalidInput::Priority(v)) => {
                assert_eq!(v, value);
                assert!(e.to_string().starts_with(&format!("invalid priority {value}: ")), "{e}");
            }
            other => panic!("priority {value}: expected Invalid(Priority), got {other:?}"),
        }
    }

    let noop = |_: Message<Value>| async { Ok(()) };
    let subscription = || Subscription::new("jobs", "c");
    for (s, setting) in [
        (subscription().concurrency(0), "concurrency"),
        (subscription().batch_size(0), "batch_size"),
        (subscription().batch_size(10_001), "batch_size"),
        (subscription().poll_interval(Duration::ZERO), "poll_interval"),
        (subscription().lease(Duration::from_millis(500)), "lease"),
        (subscription().heartbeat(Duration::from_secs(10)).dead_after(Duration::from_secs(10)), "dead_after"),
        (subscription().refill_chunk(0), "refill_chunk"),
    ] {
        bad_setting(sub(p, s, noop).await, setting, setting);
    }

    let key = |key: String| publish(p, "jobs", job(1).key(key));
    bad_setting(key(String::new()).await, "key", "empty key");
    bad_setting(key("k".repeat(256)).await, "key", "256-byte key");
    unchanged(&db, &before, "invalid subjects, patterns and settings").await;
}

// ---------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------

#[track_caller]
fn bad_payload(result: Result<NewEvent, InvalidInput>, needle: &str) {
    match result {
        Err(e @ InvalidInput::Payload { .. }) => {
            let InvalidInput::Payload { subject, reason } = &e else { unreachable!() };
            assert_eq!(subject, "jobs.run");
            assert!(reason.contains(needle), "the reason says {needle:?}: {reason}");
            assert!(e.to_string().starts_with("invalid payload for subject \"jobs.run\": "), "{e}");
        }
        other => panic!("expected Invalid(Payload) saying {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn payloads_over_the_limit_are_refused() {
    let db = TestDb::new().await;
    jobs(&db, 0).await;

    // The limit is on the serialized JSON: a string of N bytes is N + 2 with its quotes.
    let at_limit = "x".repeat(MAX_PAYLOAD_BYTES - 2);
    let event = NewEvent::new("jobs.run", &at_limit).expect("a payload of exactly the limit");
    let id = publish(&db.pool, "jobs", event).await.expect("publish a payload of exactly the limit");
    let stored: i32 = sqlx::query_scalar("SELECT length(payload #>> '{}') FROM sluice.events WHERE id = $1")
        .bind(id.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, MAX_PAYLOAD_BYTES - 2);

    let before = snapshot(&db.pool).await;
    let over = MAX_PAYLOAD_BYTES + 1;
    bad_payload(NewEvent::new("jobs.run", &"x".repeat(MAX_PAYLOAD_BYTES - 1)), &format!("{over} bytes"));
    bad_payload(NewEvent::new("jobs.run", &"x".repeat(MAX_PAYLOAD_BYTES - 1)), &MAX_PAYLOAD_BYTES.to_string());
    // Escapes count: 200,000 control characters are 1,200,000 bytes of JSON.
    bad_payload(NewEvent::new("jobs.run", &"\u{1}".repeat(200_000)), "1200002 bytes");
    bad_payload(NewEvent::new("jobs.run", &vec![0_u8; MAX_PAYLOAD_BYTES]), "over the limit");
    let big: BTreeMap<String, String> = (0..20_000).map(|i| (format!("key{i}"), "v".repeat(50))).collect();
    bad_payload(NewEvent::new("jobs.run", &big), "over the limit");
    unchanged(&db, &before, "payloads over the limit").await;
}

/// A payload whose serialization fails.
struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this payload refuses to serialize"))
    }
}

#[tokio::test]
async fn payloads_that_are_not_json_are_refused() {
    let db = TestDb::new().await;
    jobs(&db, 1).await;
    let before = snapshot(&db.pool).await;

    // JSON object keys are strings; serde_json refuses keys it cannot write as one.
    let tuple_keys: BTreeMap<(i32, i32), i32> = [((1, 2), 3)].into();
    bad_payload(NewEvent::new("jobs.run", &tuple_keys), "key must be a string");
    let vec_keys: BTreeMap<Vec<u8>, i32> = [(vec![1], 3)].into();
    bad_payload(NewEvent::new("jobs.run", &vec_keys), "key must be a string");
    bad_payload(NewEvent::new("jobs.run", &Unserializable), "this payload refuses to serialize");

    // Raw SQL: the column type refuses text that is not JSON.
    let stream = "(SELECT id FROM sluice.streams WHERE name = 'jobs')";
    for payload in ["'not json'", "'{\"a\":'", "'{a: 1}'", "''", "'\\u0000'", "'[1,]'"] {
        let statement =
            format!("INSERT INTO sluice.events (stream_id, subject, payload) VALUES ({stream}, 'a', {payload})");
        let (code, _) = refused_by_schema(&db.pool, &statement).await;
        assert_eq!(code, "22P02", "{statement}: invalid_text_representation");
    }
    let nul = format!(
        "INSERT INTO sluice.events (stream_id, subject, payload) VALUES ({stream}, 'a', '{{\"a\": \"\\u0000\"}}')"
    );
    assert_eq!(refused_by_schema(&db.pool, &nul).await.0, "22P05", "{nul}: untranslatable_character");
    unchanged(&db, &before, "payloads that are not JSON").await;
}

/// Rows that bypass the library are refused by the schema's constraints.
#[tokio::test]
async fn the_schema_refuses_bad_rows_from_raw_sql() {
    let db = TestDb::new().await;
    let ids = jobs(&db, 1).await;
    let before = snapshot(&db.pool).await;
    let stream = "(SELECT id FROM sluice.streams WHERE name = 'jobs')";
    let consumer = "(SELECT id FROM sluice.consumers WHERE name = 'c')";
    let event = |column: &str, value: &str| {
        format!(
            "INSERT INTO sluice.events (stream_id, subject, payload, {column}) VALUES ({stream}, 'a', '{{}}', {value})"
        )
    };
    let cases = [
        (event("metadata", "'{\"n\": 1}'"), "events_metadata_string_map"),
        (event("metadata", "'{\"a\": \"x\", \"b\": null}'"), "events_metadata_string_map"),
        (event("metadata", "'{\"a\": {\"b\": \"c\"}}'"), "events_metadata_string_map"),
        (event("metadata", "'[\"a\"]'"), "events_metadata_string_map"),
        (event("metadata", "'\"a\"'"), "events_metadata_string_map"),
        (event("key", "''"), "events_key_length"),
        (event("key", "repeat('k', 256)"), "events_key_length"),
        (event("priority", "0"), "events_priority_range"),
        (event("priority", "6"), "events_priority_range"),
        (
            format!("INSERT INTO sluice.events (stream_id, subject, payload) VALUES ({stream}, 'a.*', '{{}}')"),
            "events_subject_valid",
        ),
        (
            format!("INSERT INTO sluice.events (stream_id, subject, payload) VALUES ({stream}, repeat('a', 256), '{{}}')"),
            "events_subject_valid",
        ),
        ("INSERT INTO sluice.streams (name) VALUES ('a b')".to_string(), "streams_name_valid"),
        ("INSERT INTO sluice.streams (name, event_retention) VALUES ('s', '0')".to_string(), "streams_event_retention_positive"),
        (
            format!("INSERT INTO sluice.consumers (stream_id, name, position, include_subjects) VALUES ({stream}, 'd', '1:1:', '{{}}')"),
            "consumers_include_valid",
        ),
        (
            format!(
                "INSERT INTO sluice.consumers (stream_id, name, position, include_subjects) VALUES ({stream}, 'd', '1:1:', '{{a.>.b}}')"
            ),
            "consumers_include_valid",
        ),
        (
            format!(
                "INSERT INTO sluice.consumers (stream_id, name, position, exclude_subjects) VALUES ({stream}, 'd', '1:1:', ARRAY[NULL])"
            ),
            "consumers_exclude_valid",
        ),
        (
            format!("INSERT INTO sluice.consumers (stream_id, name, position, max_attempts) VALUES ({stream}, 'd', '1:1:', 0)"),
            "consumers_max_attempts_range",
        ),
        (
            format!("INSERT INTO sluice.consumers (stream_id, name, position, lease) VALUES ({stream}, 'd', '1:1:', '0.5 s')"),
            "consumers_lease_range",
        ),
        (format!("UPDATE sluice.tasks SET priority = 9 WHERE consumer_id = {consumer}"), "tasks_priority_range"),
        (format!("UPDATE sluice.tasks SET state = 'running' WHERE consumer_id = {consumer}"), "tasks_running_has_lease"),
        (format!("UPDATE sluice.tasks SET state = 'scheduled' WHERE consumer_id = {consumer}"), "tasks_scheduled_has_time"),
        (format!("UPDATE sluice.tasks SET errors = '{{}}' WHERE consumer_id = {consumer}"), "tasks_errors_array"),
        (format!("UPDATE sluice.tasks SET attempt = -1 WHERE consumer_id = {consumer}"), "tasks_attempt_nonnegative"),
    ];
    for (statement, constraint) in &cases {
        let (code, got) = refused_by_schema(&db.pool, statement).await;
        assert_eq!((code.as_str(), got.as_deref()), ("23514", Some(*constraint)), "{statement}");
    }
    // Metadata that is a map of strings is fine.
    let fine = event("metadata", "'{\"a\": \"x\", \"b\": \"\"}'");
    sqlx::query(&format!("{fine} RETURNING id")).fetch_one(&db.pool).await.expect("a string map");
    sqlx::query("DELETE FROM sluice.events WHERE id > $1").bind(ids[0].0).execute(&db.pool).await.unwrap();
    unchanged(&db, &before, "raw SQL the schema refuses").await;
}

// ---------------------------------------------------------------------------
// Unknown ids and wrong states
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_streams_consumers_and_events_are_named() {
    let db = TestDb::new().await;
    let ids = jobs(&db, 2).await;
    create_consumer(&db.pool, "jobs", "none", ConsumerOptions::default().include(["other.>"]).start(Start::Beginning))
        .await
        .unwrap();
    refill(&db, "none").await;
    let before = snapshot(&db.pool).await;
    let p = &db.pool;
    let unknown = EventId(ids[1].0 + 1_000_000);

    // An event that does not exist, and one the consumer did not match.
    for event in [unknown, EventId(-1), EventId(0), EventId(i64::MAX)] {
        task_not_found(get_task(p, "jobs", "c", event).await, "c", event, "get_task");
        task_not_found(cancel_task(p, "jobs", "c", event, Some("r")).await, "c", event, "cancel_task");
        task_not_found(retry_task(p, "jobs", "c", event, Some("r")).await, "c", event, "retry_task");
        assert!(task_log(p, "jobs", "c", event).await.unwrap().is_empty());
    }
    task_not_found(get_task(p, "jobs", "none", ids[0]).await, "none", ids[0], "get_task of an unmatched event");
    task_not_found(cancel_task(p, "jobs", "none", ids[0], None).await, "none", ids[0], "cancel_task unmatched");
    task_not_found(retry_task(p, "jobs", "none", ids[0], None).await, "none", ids[0], "retry_task unmatched");

    // A consumer that does not exist.
    let noop = |_: Message<Value>| async { Ok(()) };
    consumer_not_found(get_task(p, "jobs", "ghost", ids[0]).await, "jobs", "ghost", "get_task");
    consumer_not_found(cancel_task(p, "jobs", "ghost", ids[0], None).await, "jobs", "ghost", "cancel_task");
    consumer_not_found(retry_task(p, "jobs", "ghost", ids[0], None).await, "jobs", "ghost", "retry_task");
    consumer_not_found(task_log(p, "jobs", "ghost", ids[0]).await, "jobs", "ghost", "task_log");
    consumer_not_found(get_consumer(p, "jobs", "ghost").await, "jobs", "ghost", "get_consumer");
    consumer_not_found(delete_consumer(p, "jobs", "ghost").await, "jobs", "ghost", "delete_consumer");
    consumer_not_found(sub(p, Subscription::new("jobs", "ghost"), noop).await, "jobs", "ghost", "sub");

    // A stream that does not exist: the calls that look the stream up say so.
    stream_not_found(get_stream(p, "nowhere").await, "nowhere", "get_stream");
    stream_not_found(delete_stream(p, "nowhere").await, "nowhere", "delete_stream");
    stream_not_found(list_consumers(p, Some("nowhere")).await, "nowhere", "list_consumers");
    stream_not_found(publish(p, "nowhere", job(1)).await, "nowhere", "publish");
    stream_not_found(publish_batch(p, "nowhere", [job(1), job(2)]).await, "nowhere", "publish_batch");
    let create = create_consumer(p, "nowhere", "c", ConsumerOptions::default()).await;
    stream_not_found(create, "nowhere", "create_consumer");
    stream_not_found(delete_consumer(p, "nowhere", "c").await, "nowhere", "delete_consumer");
    stream_not_found(sub(p, Subscription::new("nowhere", "c"), noop).await, "nowhere", "sub");
    // The task calls look the consumer up within its stream (documented on
    // get_consumer): a missing stream is a missing consumer of that stream.
    consumer_not_found(get_consumer(p, "nowhere", "c").await, "nowhere", "c", "get_consumer");
    consumer_not_found(get_task(p, "nowhere", "c", ids[0]).await, "nowhere", "c", "get_task");
    consumer_not_found(cancel_task(p, "nowhere", "c", ids[0], None).await, "nowhere", "c", "cancel_task");
    consumer_not_found(retry_task(p, "nowhere", "c", ids[0], None).await, "nowhere", "c", "retry_task");
    consumer_not_found(task_log(p, "nowhere", "c", ids[0]).await, "nowhere", "c", "task_log");
    unchanged(&db, &before, "calls on unknown ids").await;
}

#[tokio::test]
async fn actions_on_tasks_in_the_wrong_state_are_refused() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default().start(Start::Beginning)).await.unwrap();
    let keep = ConsumerOptions::default().start(Start::Beginning).completed_retention(Duration::from_secs(3600));
    create_consumer(&db.pool, "jobs", "keep", keep).await.unwrap();
    let ids = publish_batch(&db.pool, "jobs", (0..5).map(job)).await.unwrap();
    let later = publish(&db.pool, "jobs", job(5).deliver_at(Utc::now() + chrono::Duration::hours(1))).await.unwrap();
    refill(&db, "c").await;
    refill(&db, "keep").await;

    let running = claim(&db, "c", ids[0]).await;
    cancel_task(&db.pool, "jobs", "c", ids[1], Some("setup")).await.unwrap();
    let discarded = claim(&db, "c", ids[2]).await;
    assert_eq!(discarded.nack(&db.pool, Nack::discard("setup")).await.unwrap(), TaskState::Discarded);
    let completed = claim(&db, "keep", ids[0]).await;
    completed.ack(&db.pool).await.unwrap();
    let states = [
        (ids[0], "c", TaskState::Running),
        (ids[1], "c", TaskState::Cancelled),
        (ids[2], "c", TaskState::Discarded),
        (ids[3], "c", TaskState::Available),
        (later, "c", TaskState::Scheduled),
        (ids[0], "keep", TaskState::Completed),
    ];
    for (event, consumer, state) in states {
        assert_eq!(get_task(&db.pool, "jobs", consumer, event).await.unwrap().state, state);
    }

    let before = snapshot(&db.pool).await;
    let p = &db.pool;
    let (cancellable, retryable) = ("available, scheduled, waiting or discarded", "discarded or cancelled");
    for (event, consumer, state) in states {
        if !matches!(state, TaskState::Available | TaskState::Scheduled | TaskState::Discarded) {
            let result = cancel_task(p, "jobs", consumer, event, Some("by hand")).await;
            wrong_state(result, event, consumer, state, "cancel", cancellable);
        }
        if !matches!(state, TaskState::Discarded | TaskState::Cancelled) {
            let result = retry_task(p, "jobs", consumer, event, Some("by hand")).await;
            wrong_state(result, event, consumer, state, "retry", retryable);
        }
    }

    // Settling with a lease token that does not hold the task changes nothing.
    let stale = TaskRef { lease_token: running.lease_token + 1, ..running.clone() };
    let earlier = TaskRef { lease_token: running.lease_token - 1, ..running.clone() };
    for task in [&stale, &earlier, &discarded, &completed] {
        lease_lost(task.ack(p).await, task, "ack");
        lease_lost(task.nack(p, Nack::requeue_start()).await, task, "nack");
        lease_lost(task.defer(p, Defer::by(Duration::from_secs(1))).await, task, "defer");
    }
    let ghost = TaskRef { event_id: EventId(ids[4].0 + 1_000_000), ..running.clone() };
    lease_lost(ghost.ack(p).await, &ghost, "ack of an unknown event");
    let other_consumer = TaskRef { consumer_id: running.consumer_id + 1_000, ..running.clone() };
    lease_lost(other_consumer.ack(p).await, &other_consumer, "ack of an unknown consumer");
    match running.defer(p, Defer::until(Utc::now() - chrono::Duration::seconds(5))).await {
        Err(TaskError::Invalid(e @ InvalidInput::Setting { setting: "defer", .. })) => {
            assert!(e.to_string().contains("in the past"), "{e}");
        }
        other => panic!("defer into the past: expected Invalid(Setting defer), got {other:?}"),
    }
    unchanged(&db, &before, "actions on tasks in the wrong state").await;
}

// ---------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_batch_with_one_invalid_event_stores_nothing() {
    let db = TestDb::new().await;
    jobs(&db, 1).await;
    let before = snapshot(&db.pool).await;
    let p = &db.pool;

    let with_key = |key: String| vec![job(1), job(2), job(3).key(key), job(4)];
    bad_setting(publish_batch(p, "jobs", with_key(String::new())).await, "key", "a batch with an empty key");
    bad_setting(publish_batch(p, "jobs", with_key("k".repeat(256))).await, "key", "a batch with a long key");
    unchanged(&db, &before, "a batch refused by the library").await;

    // The error names the event of the batch it is about.
    let e = publish_batch(p, "jobs", vec![job(1), job(2).metadata("trace", "a\u{0}b"), job(3)]).await.unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(InvalidInput::Setting { setting: "metadata", reason }) if reason.contains("event 1 of the batch")),
        "{e:?}"
    );
    unchanged(&db, &before, "a batch with a NUL in one event's metadata").await;
}

#[tokio::test]
async fn an_empty_batch_stores_nothing() {
    let db = TestDb::new().await;
    jobs(&db, 1).await;
    let before = snapshot(&db.pool).await;
    let ids = publish_batch(&db.pool, "jobs", Vec::<NewEvent>::new()).await.expect("an empty batch");
    assert!(ids.is_empty());
    unchanged(&db, &before, "an empty batch").await;
}

// ---------------------------------------------------------------------------
// Library problems found by these tests (see the reports of issue 6)
// ---------------------------------------------------------------------------

/// A NUL character passes every check of the library, then Postgres refuses
/// it (jsonb and text cannot hold U+0000): the caller gets an untyped
/// `Error::Database` instead of an `Error::Invalid` naming the event.
#[tokio::test]
async fn nul_characters_are_refused_as_invalid_input() {
    let db = TestDb::new().await;
    let ids = jobs(&db, 2).await;
    let held = claim(&db, "c", ids[0]).await;
    let before = snapshot(&db.pool).await;
    let p = &db.pool;
    let nul = "a\u{0}b";
    let typed = |r: &Result<EventId, Error>| matches!(r, Err(Error::Invalid(_)));
    let mut failures = Vec::new();
    for (what, result) in [
        ("payload", NewEvent::new("jobs.run", &json!({ "text": nul })).map(|_| EventId(0)).map_err(Error::from)),
        ("payload key", NewEvent::new("jobs.run", &json!({ nul: 1 })).map(|_| EventId(0)).map_err(Error::from)),
        ("metadata value", publish(p, "jobs", job(1).metadata("trace", nul)).await),
        ("metadata key", publish(p, "jobs", job(1).metadata(nul, "x")).await),
        ("ordering key", publish(p, "jobs", job(1).key(nul)).await),
        ("cancel reason", cancel_task(p, "jobs", "c", ids[1], Some(nul)).await.map(|()| ids[1])),
    ] {
        if !typed(&result) {
            failures.push(format!("a NUL character in the {what}: expected Error::Invalid, got {result:?}"));
        }
    }
    let nacked = held.nack(p, Nack::discard(nul)).await;
    if !matches!(nacked, Err(TaskError::Invalid(_))) {
        failures.push(format!("a NUL character in a nack reason: expected TaskError::Invalid, got {nacked:?}"));
    }
    unchanged(&db, &before, "NUL characters").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A consumer whose filters the library accepts must be one the database can
/// refill. With many patterns, the single regular expression built by
/// `sluice.patterns_regex` is more than Postgres compiles ("regular
/// expression is too complex"): the consumer is created, then every refill
/// of it fails, and its subscriber retries forever.
#[tokio::test]
async fn a_consumer_the_library_accepts_can_be_refilled() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    let before = snapshot(&db.pool).await;
    let regions: Vec<String> = (0..10_000).map(|i| format!("orders.r{i}.*.created")).collect();
    let options = ConsumerOptions::default().include(regions).start(Start::Beginning);
    match create_consumer(&db.pool, "jobs", "regions", options).await {
        // Refusing it up front, with a typed error, would be fine.
        Err(Error::Invalid(_)) => unchanged(&db, &before, "a refused consumer").await,
        Ok(_) => {
            let ids = publish_batch(
                &db.pool,
                "jobs",
                ["orders.r7.eu.created", "orders.r7.eu.deleted"].map(|s| NewEvent::new(s, &json!({})).unwrap()),
            )
            .await
            .unwrap();
            let id = consumer_id(&db, "regions").await;
            let refilled = support::refill(&db.pool, id, 1000).await;
            match refilled {
                Ok((materialized, _)) => assert_eq!(materialized, 1, "refill of an accepted consumer"),
                Err(e) => panic!("refill of a consumer create_consumer accepted: {e}"),
            }
            let tasks: Vec<i64> =
                sqlx::query_scalar("SELECT event_id FROM sluice.tasks").fetch_all(&db.pool).await.unwrap();
            assert_eq!(tasks, [ids[0].0]);
        }
        Err(other) => panic!("expected the consumer created or refused as invalid, got {other:?}"),
    }
}

/// Times and durations the library accepts but Postgres cannot represent
/// (timestamptz starts in 4713 BC; an interval holds about 178 million
/// years) come back as an untyped `Error::Database` (22008).
#[tokio::test]
async fn out_of_range_times_are_refused_as_invalid_input() {
    let db = TestDb::new().await;
    let ids = jobs(&db, 1).await;
    let p = &db.pool;
    let before = snapshot(p).await;
    let mut failures = Vec::new();
    let ancient = publish(p, "jobs", job(1).deliver_at(chrono::DateTime::<Utc>::MIN_UTC)).await;
    if !matches!(ancient, Err(Error::Invalid(InvalidInput::Setting { .. }))) {
        failures.push(format!("deliver_at {}: {ancient:?}", chrono::DateTime::<Utc>::MIN_UTC));
    }
    let eons = Duration::from_millis(i64::MAX as u64);
    let lease = create_consumer(p, "jobs", "x", ConsumerOptions::default().lease(eons)).await;
    if !matches!(lease, Err(Error::Invalid(InvalidInput::Setting { setting: "lease", .. }))) {
        failures.push(format!("lease of {eons:?}: {lease:?}"));
    }
    let retention = create_stream(p, "other", StreamOptions::default().event_retention(eons)).await;
    if !matches!(retention, Err(Error::Invalid(InvalidInput::Setting { setting: "event_retention", .. }))) {
        failures.push(format!("event_retention of {eons:?}: {retention:?}"));
    }
    unchanged(&db, &before, "times out of range").await;
    let held = claim(&db, "c", ids[0]).await;
    let before_defer = snapshot(p).await;
    let deferred = held.defer(p, Defer::by(Duration::MAX)).await;
    if !matches!(deferred, Err(TaskError::Invalid(InvalidInput::Setting { setting: "defer", .. }))) {
        failures.push(format!("Defer::by(Duration::MAX): {deferred:?}"));
    }
    unchanged(&db, &before_defer, "a deferral out of range").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
