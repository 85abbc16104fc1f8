//! Property tests: the subject rules and the matcher in Rust agree with the
//! SQL the database runs (`sluice.valid_*`, `sluice.patterns_regex`, and the
//! refill that materializes tasks).
//!
//! Each property gets one database and checks a batch of generated cases per
//! SQL round trip. `PROPTEST_CASES` sets the number of batches (default 256).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sluice::{
    check_pattern, check_subject, create_consumer, create_stream, delete_stream, get_stream, publish_batch,
    subject_matches, ConsumerOptions, Error, InvalidInput, NewEvent, Start, StreamOptions,
};
use sqlx::PgPool;
use support::TestDb;
use tokio::runtime::Handle;

fn runner(default_cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    // No regression files: a failure prints the minimal case, which is what to keep.
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// Runs a property whose check is async, from the multi-thread runtime of the test.
fn check<S, F, Fut>(runner: &mut TestRunner, strategy: S, test: F)
where
    S: Strategy,
    S::Value: Clone,
    F: Fn(S::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), TestCaseError>>,
{
    let handle = Handle::current();
    let result = tokio::task::block_in_place(|| runner.run(&strategy, |value| handle.block_on(test(value))));
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

/// A small alphabet, so that patterns and subjects meet. `a` and `ab` share a
/// prefix, `a-b` and `x_1` hold the other token characters.
const TOKENS: &[&str] = &["a", "ab", "a-b", "x_1"];

fn token() -> impl Strategy<Value = String> {
    prop::sample::select(TOKENS).prop_map(String::from)
}

fn subject() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 1..=4).prop_map(|t| t.join("."))
}

fn pattern() -> impl Strategy<Value = String> {
    let part = prop_oneof![3 => token(), 2 => Just("*".to_string())];
    (prop::collection::vec(part, 0..=4), prop::bool::weighted(0.3)).prop_filter_map("empty pattern", |(mut t, tail)| {
        if tail {
            t.push(">".to_string());
        }
        (!t.is_empty()).then(|| t.join("."))
    })
}

/// Strings of every kind: near-valid ones, wildcards in the wrong places,
/// unicode, whitespace, control characters, and lengths around the limits.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => token(),
        2 => Just("*".to_string()),
        2 => Just(">".to_string()),
        1 => Just(String::new()),
        2 => "[ é\u{212A}ı名🙂\t\n'\";/\\-_.*>A-Z0-9]{1,3}",
    ];
    let near_limit = (60usize..=70, 250usize..=260, prop::sample::select(vec!["ab.", "*.", "a", "x_1.*.", "-"]), 0..3)
        .prop_map(|(short, long, unit, end)| {
            let n = if end == 0 { short } else { long };
            let mut s: String = unit.repeat(n).chars().take(n).collect();
            match end {
                1 if s.ends_with('.') => {
                    s.pop();
                    s.push('z');
                }
                2 => {
                    s.truncate(n - 2);
                    if !s.ends_with('.') {
                        s.pop();
                        s.push('.');
                    }
                    s.push('>');
                }
                _ => {}
            }
            s
        });
    prop_oneof![
        3 => prop::collection::vec(piece, 1..=5).prop_map(|p| p.join(".")),
        2 => "[a-zA-Z0-9_.*> -]{0,12}",
        1 => any::<String>(),
        1 => prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter),
        1 => near_limit,
    ]
    // Postgres text cannot hold U+0000; the library refuses it (tests/bad_input.rs).
    .prop_filter("Postgres text cannot hold NUL", |s| !s.contains('\0'))
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// `check_subject`, `check_pattern` and the name rule agree with
/// `sluice.valid_subject`, `sluice.valid_patterns` and `sluice.valid_name`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_agrees_with_sql() {
    let db = TestDb::new().await;
    let started = Instant::now();
    let seen = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];
    check(&mut runner(256), prop::collection::vec(text(), 1..=64), |texts| {
        let (pool, seen) = (&db.pool, &seen);
        async move {
            let sql: Vec<(bool, bool, bool)> = sqlx::query_as(
                "SELECT sluice.valid_subject(t), sluice.valid_patterns(ARRAY[t]), sluice.valid_name(t)
                 FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
            )
            .bind(&texts)
            .fetch_all(pool)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (text, (subject, pattern, name)) in texts.iter().zip(sql) {
                seen[0].fetch_add(1, Ordering::Relaxed);
                seen[1].fetch_add(subject as usize, Ordering::Relaxed);
                seen[2].fetch_add(pattern as usize, Ordering::Relaxed);
                seen[3].fetch_add(name as usize, Ordering::Relaxed);
                prop_assert_eq!(check_subject(text).is_ok(), subject, "subject {:?}", text);
                prop_assert_eq!(check_pattern(text).is_ok(), pattern, "pattern {:?}", text);
                prop_assert_eq!(rust_name_is_valid(pool, text).await, name, "name {:?}", text);
            }
            Ok(())
        }
    });
    let [total, subjects, patterns, names] = seen.map(|n| n.into_inner());
    println!(
        "validity: {total} strings ({subjects} valid subjects, {patterns} valid patterns, {names} valid names) in {:?}",
        started.elapsed()
    );
    assert!(subjects > total / 20 && patterns > total / 10 && names > total / 50, "the generator covers valid input");
    assert!(total - patterns > total / 10, "the generator covers invalid input");
}

/// The library's name rule is not public; a call that validates names before
/// anything else shows it: an invalid name is `Invalid(Name)`, a valid one
/// reaches the database and is not found.
async fn rust_name_is_valid(pool: &PgPool, name: &str) -> bool {
    match get_stream(pool, name).await {
        Err(Error::Invalid(InvalidInput::Name { .. })) => false,
        Err(Error::StreamNotFound { .. }) => true,
        other => panic!("get_stream({name:?}): {other:?}"),
    }
}

/// The Rust rule of a consumer's filters: some include matches, no exclude does.
fn rust_delivers(include: &[String], exclude: &[String], subject: &str) -> bool {
    include.iter().any(|p| subject_matches(p, subject)) && !exclude.iter().any(|p| subject_matches(p, subject))
}

#[derive(Debug, Clone)]
struct Filter {
    include: Vec<String>,
    exclude: Vec<String>,
}

fn filter() -> impl Strategy<Value = Filter> {
    (prop::collection::vec(pattern(), 1..=3), prop::collection::vec(pattern(), 0..=2))
        .prop_map(|(include, exclude)| Filter { include, exclude })
}

/// The refill's SQL filter (`subject ~ include_regex AND (exclude_regex IS
/// NULL OR subject !~ exclude_regex)`, with the regexes built by
/// `sluice.patterns_regex`) agrees with `subject_matches`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_matching_agrees_with_the_rust_matcher() {
    let db = TestDb::new().await;
    let started = Instant::now();
    let (total, delivered) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let (single, single_matched) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let cases = prop::collection::vec((filter(), subject()), 1..=64);
    check(&mut runner(256), cases, |cases| {
        let (pool, total, delivered, single, single_matched) = (&db.pool, &total, &delivered, &single, &single_matched);
        async move {
            // Pattern lists travel comma-joined: a comma is no pattern character.
            let subjects: Vec<&str> = cases.iter().map(|(_, s)| s.as_str()).collect();
            let includes: Vec<String> = cases.iter().map(|(f, _)| f.include.join(",")).collect();
            let excludes: Vec<String> = cases.iter().map(|(f, _)| f.exclude.join(",")).collect();
            let sql: Vec<(bool, Vec<bool>)> = sqlx::query_as(
                "SELECT s ~ sluice.patterns_regex(inc)
                        AND (sluice.patterns_regex(exc) IS NULL OR s !~ sluice.patterns_regex(exc)),
                        ARRAY(SELECT s ~ sluice.patterns_regex(ARRAY[p]) FROM unnest(inc) WITH ORDINALITY AS q(p, j)
                              ORDER BY j)
                 FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(s, inc_text, exc_text, i),
                      LATERAL (SELECT string_to_array(inc_text, ',') AS inc, string_to_array(exc_text, ',') AS exc) l
                 ORDER BY i",
            )
            .bind(&subjects)
            .bind(&includes)
            .bind(&excludes)
            .fetch_all(pool)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(sql.len(), cases.len());
            for ((f, subject), (sql_delivers, sql_each)) in cases.iter().zip(sql) {
                let rust = rust_delivers(&f.include, &f.exclude, subject);
                total.fetch_add(1, Ordering::Relaxed);
                delivered.fetch_add(rust as usize, Ordering::Relaxed);
                prop_assert_eq!(sql_delivers, rust, "{:?} on subject {:?}", f, subject);
                for (p, sql_matches) in f.include.iter().zip(sql_each) {
                    let rust_matches = subject_matches(p, subject);
                    single.fetch_add(1, Ordering::Relaxed);
                    single_matched.fetch_add(rust_matches as usize, Ordering::Relaxed);
                    prop_assert_eq!(sql_matches, rust_matches, "pattern {:?} on subject {:?}", p, subject);
                }
            }
            Ok(())
        }
    });
    let (total, delivered) = (total.into_inner(), delivered.into_inner());
    let (single, single_matched) = (single.into_inner(), single_matched.into_inner());
    println!(
        "matching: {total} (filter, subject) cases, {delivered} delivered; {single} (pattern, subject) pairs, \
         {single_matched} matching; in {:?}",
        started.elapsed()
    );
    assert!(delivered > total / 10 && total - delivered > total / 10, "both outcomes are common");
    assert!(single_matched > single / 20, "single patterns match often enough");
}

#[derive(Debug, Clone)]
struct Scenario {
    consumers: Vec<Filter>,
    subjects: Vec<String>,
}

/// End to end: consumers created with random filters through
/// `create_consumer`, events published with random subjects, refilled; each
/// consumer's tasks are exactly the events the Rust matcher delivers to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_tasks_are_what_the_rust_matcher_predicts() {
    let db = TestDb::new().await;
    let started = Instant::now();
    let runs = AtomicUsize::new(0);
    let (tasks_seen, pairs_seen) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let scenario = (prop::collection::vec(filter(), 1..=6), prop::collection::vec(subject(), 1..=60))
        .prop_map(|(consumers, subjects)| Scenario { consumers, subjects });
    check(&mut runner(64), scenario, |scenario| {
        let (pool, runs, tasks_seen, pairs_seen) = (&db.pool, &runs, &tasks_seen, &pairs_seen);
        async move {
            // A stream of its own per run (shrinking reruns cases).
            let stream = format!("s{}", runs.fetch_add(1, Ordering::Relaxed));
            let (expected, actual) = run_scenario(pool, &stream, &scenario).await;
            delete_stream(pool, &stream).await.expect("delete the stream");
            tasks_seen.fetch_add(actual.values().map(Vec::len).sum(), Ordering::Relaxed);
            pairs_seen.fetch_add(scenario.consumers.len() * scenario.subjects.len(), Ordering::Relaxed);
            prop_assert_eq!(actual, expected);
            Ok(())
        }
    });
    let (tasks, pairs) = (tasks_seen.into_inner(), pairs_seen.into_inner());
    println!(
        "end to end: {} scenarios, {tasks} tasks materialized of {pairs} (consumer, event) pairs, in {:?}",
        runs.into_inner(),
        started.elapsed()
    );
    assert!(tasks > pairs / 10 && tasks < pairs * 9 / 10, "both outcomes are common");
}

/// Each consumer's materialized tasks (event ids), expected and actual.
async fn run_scenario(
    pool: &PgPool,
    stream: &str,
    scenario: &Scenario,
) -> (BTreeMap<String, Vec<i64>>, BTreeMap<String, Vec<i64>>) {
    create_stream(pool, stream, StreamOptions::default()).await.expect("create the stream");
    for (i, f) in scenario.consumers.iter().enumerate() {
        let options =
            ConsumerOptions::default().include(f.include.clone()).exclude(f.exclude.clone()).start(Start::Beginning);
        create_consumer(pool, stream, &format!("c{i}"), options).await.expect("create a consumer");
    }
    let events = scenario.subjects.iter().map(|s| NewEvent::new(s.as_str(), &serde_json::json!({})).unwrap());
    let ids = publish_batch(pool, stream, events).await.expect("publish");
    let consumers: Vec<(i32, String)> = sqlx::query_as(
        "SELECT c.id, c.name FROM sluice.consumers c JOIN sluice.streams s ON s.id = c.stream_id WHERE s.name = $1",
    )
    .bind(stream)
    .fetch_all(pool)
    .await
    .expect("consumers");
    let mut actual = BTreeMap::new();
    for (id, name) in consumers {
        let (_, more) = support::refill(pool, id, 100000).await.expect("refill");
        assert!(!more, "one refill takes the whole window");
        let tasks: Vec<i64> = sqlx::query_scalar("SELECT event_id FROM sluice.tasks WHERE consumer_id = $1 ORDER BY 1")
            .bind(id)
            .fetch_all(pool)
            .await
            .expect("tasks");
        actual.insert(name, tasks);
    }
    let expected = scenario
        .consumers
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let delivered = ids
                .iter()
                .zip(&scenario.subjects)
                .filter(|(_, s)| rust_delivers(&f.include, &f.exclude, s))
                .map(|(id, _)| id.0)
                .collect();
            (format!("c{i}"), delivered)
        })
        .collect();
    (expected, actual)
}
