//! The pipeline end to end: publish, positions, fan-out, competing
//! subscribers, transactional ack, shutdown, bad input.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, publish, publish_batch, sub, ConsumerOptions, Error, HandlerError, InvalidInput,
    Message, NewEvent, Start, StreamOptions, Subscription,
};
use sqlx::PgPool;
use support::{task_states, wait_until, TestDb};

const WAIT: Duration = Duration::from_secs(30);

fn fast(stream: &str, consumer: &str) -> Subscription {
    Subscription::new(stream, consumer).poll_interval(Duration::from_millis(100))
}

fn event(subject: &str, n: i64) -> NewEvent {
    NewEvent::new(subject, &json!({ "n": n })).unwrap()
}

/// Collects the event ids (and subjects) a handler saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(i64, String)>>>);

impl Seen {
    fn push(&self, id: i64, subject: &str) {
        self.0.lock().unwrap().push((id, subject.to_string()));
    }
    fn ids(&self) -> BTreeSet<i64> {
        self.0.lock().unwrap().iter().map(|(id, _)| *id).collect()
    }
    fn subjects(&self) -> BTreeSet<String> {
        self.0.lock().unwrap().iter().map(|(_, s)| s.clone()).collect()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

async fn recorder(pool: &PgPool, stream: &str, consumer: &str, seen: &Seen) -> sluice::SubscriberHandle {
    let seen = seen.clone();
    sub(pool, fast(stream, consumer), move |msg: Message<Value>| {
        let seen = seen.clone();
        async move {
            seen.push(msg.id().0, msg.subject());
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap()
}

async fn setup(db: &TestDb, consumers: &[(&str, ConsumerOptions)]) {
    create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();
    for (name, options) in consumers {
        create_consumer(&db.pool, "orders", name, options.clone()).await.unwrap();
    }
}

#[tokio::test]
async fn fan_out_delivers_each_consumer_exactly_its_matching_events() {
    let db = TestDb::new().await;
    setup(
        &db,
        &[
            ("eu", ConsumerOptions::default().include(["orders.eu.*"])),
            ("all", ConsumerOptions::default().include(["orders.>"]).exclude(["orders.*.deleted"])),
        ],
    )
    .await;
    let (eu, all) = (Seen::default(), Seen::default());
    let h1 = recorder(&db.pool, "orders", "eu", &eu).await;
    let h2 = recorder(&db.pool, "orders", "all", &all).await;

    let subjects = [
        "orders.eu.created",
        "orders.eu.deleted",
        "orders.us.created",
        "orders.us.deleted",
        "orders.eu.x.y",
        "billing.eu.created",
    ];
    publish_batch(&db.pool, "orders", subjects.iter().enumerate().map(|(i, s)| event(s, i as i64))).await.unwrap();

    wait_until(WAIT, "both consumers to finish", || async { eu.len() == 2 && all.len() == 3 }).await;
    h1.shutdown(Duration::from_secs(5)).await;
    h2.shutdown(Duration::from_secs(5)).await;
    assert_eq!(eu.subjects(), BTreeSet::from(["orders.eu.created".into(), "orders.eu.deleted".into()]));
    assert_eq!(
        all.subjects(),
        BTreeSet::from(["orders.eu.created".into(), "orders.us.created".into(), "orders.eu.x.y".into()])
    );
    assert_eq!(eu.len(), 2, "no event twice");
    assert_eq!(all.len(), 3, "no event twice");
}

#[tokio::test]
async fn consumer_start_positions() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();
    publish(&db.pool, "orders", event("orders.old", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cutoff = chrono::Utc::now();
    publish(&db.pool, "orders", event("orders.recent", 2)).await.unwrap();
    create_consumer(&db.pool, "orders", "from-start", ConsumerOptions::default().start(Start::Beginning))
        .await
        .unwrap();
    create_consumer(&db.pool, "orders", "from-time", ConsumerOptions::default().start(Start::At(cutoff)))
        .await
        .unwrap();
    create_consumer(&db.pool, "orders", "from-now", ConsumerOptions::default()).await.unwrap();
    publish(&db.pool, "orders", event("orders.new", 3)).await.unwrap();

    let (a, b, c) = (Seen::default(), Seen::default(), Seen::default());
    let hs = [
        recorder(&db.pool, "orders", "from-start", &a).await,
        recorder(&db.pool, "orders", "from-time", &b).await,
        recorder(&db.pool, "orders", "from-now", &c).await,
    ];
    wait_until(WAIT, "all consumers", || async { a.len() == 3 && b.len() == 2 && c.len() == 1 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for h in hs {
        h.shutdown(Duration::from_secs(5)).await;
    }
    assert_eq!(a.subjects().len(), 3);
    assert_eq!(b.subjects(), BTreeSet::from(["orders.recent".into(), "orders.new".into()]));
    assert_eq!(c.subjects(), BTreeSet::from(["orders.new".into()]));
}

#[tokio::test]
async fn out_of_order_commit_is_not_skipped() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default())]).await;
    let seen = Seen::default();
    let h = recorder(&db.pool, "orders", "c", &seen).await;

    // A publishes first (smaller id and txid) and stays open; B publishes and commits.
    let mut a = db.pool.begin().await.unwrap();
    let a_id = publish(&mut *a, "orders", event("orders.a", 1)).await.unwrap();
    let mut b = db.pool.begin().await.unwrap();
    let b_id = publish(&mut *b, "orders", event("orders.b", 2)).await.unwrap();
    assert!(a_id < b_id);
    b.commit().await.unwrap();

    wait_until(WAIT, "B's event", || async { seen.ids().contains(&b_id.0) }).await;
    // Let a few refills pass the consumer's position beyond B.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!seen.ids().contains(&a_id.0), "A is not committed yet");

    a.commit().await.unwrap();
    wait_until(WAIT, "A's event after its commit", || async { seen.ids().contains(&a_id.0) }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn an_open_transaction_delays_only_its_own_event() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default())]).await;
    let seen = Seen::default();
    let h = recorder(&db.pool, "orders", "c", &seen).await;

    let mut open = db.pool.begin().await.unwrap();
    let held = publish(&mut *open, "orders", event("orders.held", 0)).await.unwrap();

    let mut others = BTreeSet::new();
    for chunk in 0..10 {
        let ids =
            publish_batch(&db.pool, "orders", (0..100).map(|i| event("orders.other", chunk * 100 + i))).await.unwrap();
        others.extend(ids.into_iter().map(|id| id.0));
    }
    wait_until(WAIT, "the 1,000 events published after the open transaction", || async {
        seen.ids().is_superset(&others)
    })
    .await;
    assert!(!seen.ids().contains(&held.0));

    open.commit().await.unwrap();
    wait_until(WAIT, "the held event after its commit", || async { seen.ids().contains(&held.0) }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 1001, "every event once");
}

#[tokio::test]
async fn a_rolled_back_publish_leaves_no_event_and_no_task() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default())]).await;
    let seen = Seen::default();
    let h = recorder(&db.pool, "orders", "c", &seen).await;

    let mut tx = db.pool.begin().await.unwrap();
    publish_batch(&mut *tx, "orders", (0..5).map(|i| event("orders.gone", i))).await.unwrap();
    tx.rollback().await.unwrap();
    let kept = publish(&db.pool, "orders", event("orders.kept", 9)).await.unwrap();

    wait_until(WAIT, "the committed event", || async { seen.ids().contains(&kept.0) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.shutdown(Duration::from_secs(5)).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.events").fetch_one(&db.direct).await.unwrap();
    assert_eq!(events, 1);
    assert_eq!(seen.subjects(), BTreeSet::from(["orders.kept".into()]));
    assert!(task_states(&db.direct, "c").await.is_empty(), "no task left");
}

#[tokio::test]
async fn competing_subscribers_share_the_work_without_overlap() {
    const N: i64 = 10_000;
    let db = TestDb::new().await;
    setup(&db, &[("work", ConsumerOptions::default())]).await;

    let running: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let overlaps = Arc::new(Mutex::new(0usize));
    let counts: Arc<Mutex<BTreeMap<i64, usize>>> = Arc::default();
    let per_worker: Arc<Mutex<BTreeMap<usize, usize>>> = Arc::default();
    let mut handles = Vec::new();
    for w in 0..4 {
        let (running, overlaps, counts, per_worker) =
            (running.clone(), overlaps.clone(), counts.clone(), per_worker.clone());
        let subscription = fast("orders", "work").concurrency(8).batch_size(50);
        handles.push(
            sub(&db.pool, subscription, move |msg: Message<Value>| {
                let (running, overlaps, counts, per_worker) =
                    (running.clone(), overlaps.clone(), counts.clone(), per_worker.clone());
                async move {
                    let id = msg.id().0;
                    if !running.lock().unwrap().insert(id) {
                        *overlaps.lock().unwrap() += 1;
                    }
                    tokio::task::yield_now().await;
                    running.lock().unwrap().remove(&id);
                    *counts.lock().unwrap().entry(id).or_default() += 1;
                    *per_worker.lock().unwrap().entry(w).or_default() += 1;
                    Ok::<_, HandlerError>(())
                }
            })
            .await
            .unwrap(),
        );
    }
    let mut published = BTreeSet::new();
    for chunk in 0..(N / 1000) {
        let ids =
            publish_batch(&db.pool, "orders", (0..1000).map(|i| event("orders.job", chunk * 1000 + i))).await.unwrap();
        published.extend(ids.into_iter().map(|id| id.0));
    }
    wait_until(Duration::from_secs(120), "all 10,000 events handled", || async {
        counts.lock().unwrap().len() == N as usize
    })
    .await;
    for h in handles {
        h.shutdown(Duration::from_secs(10)).await;
    }
    let counts = counts.lock().unwrap().clone();
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), published, "every event handled");
    assert!(counts.values().all(|&c| c == 1), "no event handled twice");
    assert_eq!(*overlaps.lock().unwrap(), 0, "no event held by two handlers at once");
    assert!(task_states(&db.direct, "work").await.is_empty(), "no task left behind");
    let per_worker = per_worker.lock().unwrap().clone();
    assert_eq!(per_worker.values().sum::<usize>(), N as usize);
}

#[tokio::test]
async fn transactional_ack_commits_with_the_business_write() {
    const N: i64 = 200;
    let db = TestDb::new().await;
    setup(
        &db,
        &[("billing", ConsumerOptions::default().backoff(Duration::from_millis(10), Duration::from_millis(50)))],
    )
    .await;
    sqlx::query("CREATE TABLE invoices (event_id bigint NOT NULL)").execute(&db.direct).await.unwrap();
    let rolled_back = Arc::new(Mutex::new(0usize));

    let pool = db.pool.clone();
    let rb = rolled_back.clone();
    let h = sub(&db.pool, fast("orders", "billing").concurrency(8), move |msg: Message<Value>| {
        let pool = pool.clone();
        let rb = rb.clone();
        async move {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO invoices (event_id) VALUES ($1)")
                .persistent(false)
                .bind(msg.id().0)
                .execute(&mut *tx)
                .await?;
            msg.ack_tx(&mut *tx).await?;
            if msg.attempt() == 1 && rand::random::<bool>() {
                tx.rollback().await?;
                *rb.lock().unwrap() += 1;
                return Err(HandlerError::new("simulated failure after the ack, before the commit"));
            }
            tx.commit().await?;
            Ok(())
        }
    })
    .await
    .unwrap();

    publish_batch(&db.pool, "orders", (0..N).map(|i| event("orders.created", i))).await.unwrap();
    wait_until(WAIT, "every task completed", || async {
        let rows: i64 =
            sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM invoices").fetch_one(&pool_of(&db)).await.unwrap();
        rows == N && task_states(&db.direct, "billing").await.is_empty()
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;

    let per_event: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM invoices GROUP BY event_id").fetch_all(&db.direct).await.unwrap();
    assert_eq!(per_event.len(), N as usize);
    assert!(per_event.iter().all(|&c| c == 1), "exactly one business row per event");
    assert!(*rolled_back.lock().unwrap() > 0, "some first attempts were rolled back");
}

fn pool_of(db: &TestDb) -> PgPool {
    db.direct.clone()
}

#[tokio::test]
async fn an_ack_from_a_lost_lease_is_refused_and_changes_nothing() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default())]).await;
    sqlx::query("CREATE TABLE effects (event_id bigint NOT NULL)").execute(&db.direct).await.unwrap();
    let (pool, direct) = (db.pool.clone(), db.direct.clone());
    let outcome: Arc<Mutex<Option<String>>> = Arc::default();
    let out = outcome.clone();
    let h = sub(&db.pool, fast("orders", "c"), move |msg: Message<Value>| {
        let (pool, direct) = (pool.clone(), direct.clone());
        let out = out.clone();
        async move {
            // Someone else takes the task over: a later attempt holds it now.
            sqlx::query("UPDATE sluice.tasks SET lease_token = nextval('sluice.lease_token') WHERE event_id = $1")
                .bind(msg.id().0)
                .execute(&direct)
                .await?;
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO effects VALUES ($1)").persistent(false).bind(msg.id().0).execute(&mut *tx).await?;
            match msg.ack_tx(&mut *tx).await {
                Ok(()) => {
                    tx.commit().await?;
                    *out.lock().unwrap() = Some("acked".into());
                }
                Err(e) => {
                    tx.rollback().await?;
                    *out.lock().unwrap() = Some(format!("{e:?}"));
                }
            }
            Ok(())
        }
    })
    .await
    .unwrap();
    publish(&db.pool, "orders", event("orders.x", 1)).await.unwrap();
    wait_until(WAIT, "the handler", || async { outcome.lock().unwrap().is_some() }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let outcome = outcome.lock().unwrap().clone().unwrap();
    assert!(outcome.starts_with("LeaseLost"), "{outcome}");
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects").fetch_one(&db.direct).await.unwrap();
    assert_eq!(effects, 0);
    assert_eq!(task_states(&db.direct, "c").await, vec![("running".to_string(), 1)], "the task is untouched");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_work_and_hands_back_the_rest() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default().lease(Duration::from_secs(300)))]).await;
    let first = Seen::default();
    let started = Arc::new(Mutex::new(0usize));
    let (f, s) = (first.clone(), started.clone());
    let h = sub(&db.pool, fast("orders", "c").concurrency(2).batch_size(10), move |msg: Message<Value>| {
        let (f, s) = (f.clone(), s.clone());
        async move {
            *s.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            f.push(msg.id().0, msg.subject());
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    let ids: BTreeSet<i64> = publish_batch(&db.pool, "orders", (0..20).map(|i| event("orders.slow", i)))
        .await
        .unwrap()
        .iter()
        .map(|i| i.0)
        .collect();
    wait_until(WAIT, "two handlers running", || async { *started.lock().unwrap() >= 2 }).await;

    let report = h.shutdown(Duration::from_secs(10)).await;
    assert_eq!(report.aborted, 0);
    assert!(report.released > 0, "{report:?}");
    // In-flight handlers finished and were acked; nothing is left running.
    let states: BTreeMap<String, i64> = task_states(&db.direct, "c").await.into_iter().collect();
    assert_eq!(states.get("running"), None, "{states:?}");
    // Released tasks are claimable at once (events not materialized yet are
    // still ahead of the consumer's position).
    assert!(states.get("available").copied().unwrap_or(0) as usize >= report.released, "{states:?}");
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.workers").fetch_one(&db.direct).await.unwrap();
    assert_eq!(workers, 0, "the worker unregistered");

    // Another subscriber takes the rest at once (the lease is 5 minutes).
    let second = Seen::default();
    let h2 = recorder(&db.pool, "orders", "c", &second).await;
    wait_until(WAIT, "the rest", || async { first.len() + second.len() == 20 }).await;
    h2.shutdown(Duration::from_secs(5)).await;
    let all: BTreeSet<i64> = first.ids().union(&second.ids()).copied().collect();
    assert_eq!(all, ids);
    assert!(first.ids().is_disjoint(&second.ids()));
    // Released tasks that never started were not charged an attempt.
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempt FROM sluice.task_log").fetch_all(&db.direct).await.unwrap();
    assert!(attempts.is_empty(), "no task was released after starting: {attempts:?}");
}

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Order {
    id: u64,
    total_cents: u64,
}

#[tokio::test]
async fn a_payload_that_does_not_fit_the_handler_type_is_dead_lettered_with_a_clear_error() {
    let db = TestDb::new().await;
    setup(&db, &[("typed", ConsumerOptions::default())]).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let h = sub(&db.pool, fast("orders", "typed"), move |msg: Message<Order>| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(msg.payload().id);
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    publish(&db.pool, "orders", NewEvent::new("orders.bad", &json!({"id": "not a number"})).unwrap()).await.unwrap();
    publish(&db.pool, "orders", NewEvent::new("orders.good", &json!({"id": 7, "total_cents": 100})).unwrap())
        .await
        .unwrap();
    wait_until(WAIT, "the good event handled and the bad one discarded", || async {
        calls.lock().unwrap().len() == 1 && task_states(&db.direct, "typed").await == vec![("discarded".to_string(), 1)]
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*calls.lock().unwrap(), vec![7]);
    let (errors, payload): (Value, Value) = sqlx::query_as(
        "SELECT t.errors, e.payload FROM sluice.tasks t JOIN sluice.events e ON e.id = t.event_id WHERE t.state = 'discarded'",
    )
    .fetch_one(&db.direct)
    .await
    .unwrap();
    let error = errors[0]["error"].as_str().unwrap();
    assert!(error.contains("Order") && error.contains("does not deserialize"), "{error}");
    assert_eq!(payload, json!({"id": "not a number"}), "the event is stored unchanged");
}

async fn counts(pool: &PgPool) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM sluice.streams), (SELECT count(*) FROM sluice.consumers),
                (SELECT count(*) FROM sluice.events), (SELECT count(*) FROM sluice.tasks)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn bad_input_gets_typed_errors_that_name_the_thing_and_changes_nothing() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default().include(["orders.>"]))]).await;
    publish(&db.pool, "orders", event("orders.one", 1)).await.unwrap();
    let before = counts(&db.direct).await;

    let e = publish(&db.pool, "nope", event("orders.x", 1)).await.unwrap_err();
    assert!(matches!(&e, Error::StreamNotFound { stream } if stream == "nope"), "{e:?}");
    assert_eq!(e.to_string(), "stream \"nope\" does not exist");

    let e =
        sub(&db.pool, Subscription::new("orders", "ghost"), |_m: Message<Value>| async { Ok(()) }).await.unwrap_err();
    assert!(matches!(&e, Error::ConsumerNotFound { stream, consumer } if stream == "orders" && consumer == "ghost"));
    assert_eq!(e.to_string(), "consumer \"ghost\" of stream \"orders\" does not exist");
    let e = sub(&db.pool, Subscription::new("nope", "c"), |_m: Message<Value>| async { Ok(()) }).await.unwrap_err();
    assert!(matches!(&e, Error::StreamNotFound { .. }), "{e:?}");

    let e = create_stream(&db.pool, "bad name", StreamOptions::default()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(InvalidInput::Name { kind: "stream", name, .. }) if name == "bad name"),
        "{e:?}"
    );
    assert!(e.to_string().contains("\"bad name\""), "{e}");
    let e = create_consumer(&db.pool, "orders", &"x".repeat(65), ConsumerOptions::default()).await.unwrap_err();
    assert!(matches!(&e, Error::Invalid(InvalidInput::Name { kind: "consumer", .. })), "{e:?}");

    for bad in ["orders.>.x", "orders..x", "", "orders.a b"] {
        let e = create_consumer(&db.pool, "orders", "p", ConsumerOptions::default().include([bad])).await.unwrap_err();
        assert!(matches!(&e, Error::Invalid(InvalidInput::Pattern { pattern, .. }) if pattern == bad), "{bad}: {e:?}");
    }
    let e = create_consumer(&db.pool, "orders", "p", ConsumerOptions::default().exclude(["*.>.*"])).await.unwrap_err();
    assert!(matches!(&e, Error::Invalid(InvalidInput::Pattern { .. })), "{e:?}");
    let e = create_consumer(&db.pool, "nope", "p", ConsumerOptions::default()).await.unwrap_err();
    assert!(matches!(&e, Error::StreamNotFound { .. }), "{e:?}");

    for bad in ["orders..x", "orders.*", ".orders", "orders.é"] {
        let e = NewEvent::new(bad, &json!({})).unwrap_err();
        assert!(matches!(&e, InvalidInput::Subject { subject, .. } if subject == bad), "{bad}: {e:?}");
    }
    let huge = "x".repeat(sluice::MAX_PAYLOAD_BYTES + 1);
    let e = NewEvent::new("orders.huge", &huge).unwrap_err();
    assert!(matches!(&e, InvalidInput::Payload { .. }), "{e:?}");
    assert!(e.to_string().contains("orders.huge"), "{e}");

    // Creating again with other settings names the difference and keeps the stored consumer.
    let e =
        create_consumer(&db.pool, "orders", "c", ConsumerOptions::default().include(["orders.eu.*"]).max_attempts(3))
            .await
            .unwrap_err();
    assert!(matches!(&e, Error::ConsumerConflict { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("include") && text.contains("max_attempts") && text.contains("\"c\""), "{text}");
    let stored = sluice::get_consumer(&db.pool, "orders", "c").await.unwrap();
    assert_eq!(stored.include, vec!["orders.>".to_string()]);
    assert_eq!(stored.max_attempts, 25);
    // The same settings again are fine.
    create_consumer(&db.pool, "orders", "c", ConsumerOptions::default().include(["orders.>"])).await.unwrap();
    let e = create_stream(&db.pool, "orders", StreamOptions::default().event_retention(Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::StreamConflict { .. }) && e.to_string().contains("event_retention"), "{e:?}");
    create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();

    assert_eq!(counts(&db.direct).await, before, "nothing stored changed");
}

#[tokio::test]
async fn streams_and_consumers_can_be_listed_and_deleted() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "a", StreamOptions::default()).await.unwrap();
    create_stream(&db.pool, "b", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "a", "x", ConsumerOptions::default()).await.unwrap();
    create_consumer(&db.pool, "b", "y", ConsumerOptions::default()).await.unwrap();
    let names: Vec<String> = sluice::list_streams(&db.pool).await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a", "b"]);
    let consumers = sluice::list_consumers(&db.pool, Some("a")).await.unwrap();
    assert_eq!(consumers.len(), 1);
    assert_eq!(consumers[0].name, "x");
    assert_eq!(sluice::list_consumers(&db.pool, None).await.unwrap().len(), 2);
    sluice::delete_consumer(&db.pool, "a", "x").await.unwrap();
    assert!(matches!(sluice::delete_consumer(&db.pool, "a", "x").await, Err(Error::ConsumerNotFound { .. })));
    sluice::delete_stream(&db.pool, "b").await.unwrap();
    assert!(matches!(sluice::get_stream(&db.pool, "b").await, Err(Error::StreamNotFound { .. })));
    assert!(sluice::list_consumers(&db.pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_backlog_is_materialized_in_bounded_chunks() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default().start(Start::Beginning))]).await;
    // Ten transactions publishing interleaved and committing in reverse order.
    let mut txs = Vec::new();
    for _ in 0..10 {
        txs.push(db.pool.begin().await.unwrap());
    }
    for round in 0..10 {
        for (t, tx) in txs.iter_mut().enumerate() {
            publish_batch(
                &mut **tx,
                "orders",
                (0..10).map(|i| event("orders.backlog", (t * 100 + round * 10 + i) as i64)),
            )
            .await
            .unwrap();
        }
    }
    while let Some(tx) = txs.pop() {
        tx.commit().await.unwrap();
    }
    let consumer: i32 =
        sqlx::query_scalar("SELECT id FROM sluice.consumers WHERE name = 'c'").fetch_one(&db.direct).await.unwrap();
    let mut chunks = Vec::new();
    loop {
        let (materialized, more) = support::refill(&db.direct, consumer, 300).await.unwrap();
        let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.tasks").fetch_one(&db.direct).await.unwrap();
        chunks.push((materialized, tasks));
        if !more {
            break;
        }
    }
    assert_eq!(chunks, vec![(300, 300), (300, 600), (300, 900), (100, 1000)], "bounded chunks, nothing twice");
    // The queue follows publish order (event ids), whatever the commit order.
    let positions: Vec<(i64, i64)> = sqlx::query_as("SELECT event_id, position FROM sluice.tasks ORDER BY position")
        .fetch_all(&db.direct)
        .await
        .unwrap();
    let ids: Vec<i64> = positions.iter().map(|(id, _)| *id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
}

#[tokio::test]
async fn a_subscriber_with_a_small_refill_chunk_delivers_a_whole_backlog_once() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default().start(Start::Beginning))]).await;
    let ids: BTreeSet<i64> = publish_batch(&db.pool, "orders", (0..1000).map(|i| event("orders.backlog", i)))
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.0)
        .collect();
    let seen = Seen::default();
    let s = seen.clone();
    let h = sub(&db.pool, fast("orders", "c").refill_chunk(37), move |msg: Message<Value>| {
        let s = s.clone();
        async move {
            s.push(msg.id().0, msg.subject());
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    wait_until(WAIT, "the backlog", || async { seen.len() >= 1000 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(seen.ids(), ids);
    assert_eq!(seen.len(), 1000);
}

/// A subscriber of consumer `c` that records what it handles and hears of
/// new work only by LISTEN: polling is an hour away, so only a working
/// (or reconnected) LISTEN brings work in time. Behind PgBouncer in
/// transaction pooling LISTEN through it would never hear anything: it
/// LISTENs straight to the server, as docs/OPERATIONS.md says to, while
/// everything else goes through PgBouncer.
async fn listening_recorder(db: &TestDb, seen: &Seen) -> sluice::SubscriberHandle {
    let s = seen.clone();
    let mut subscription = Subscription::new("orders", "c").poll_interval(Duration::from_secs(3600));
    if support::pgbouncer().is_some() {
        subscription = subscription.listen_url(db.url.clone());
    }
    sub(&db.pool, subscription, move |msg: Message<Value>| {
        let s = s.clone();
        async move {
            s.push(msg.id().0, msg.subject());
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_subscriber_survives_its_connections_being_killed() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default())]).await;
    let seen = Seen::default();
    let h = listening_recorder(&db, &seen).await;
    publish(&db.pool, "orders", event("orders.before", 0)).await.unwrap();
    wait_until(WAIT, "the first event", || async { seen.len() == 1 }).await;

    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()) k",
    )
    .fetch_one(&db.direct)
    .await
    .unwrap();
    assert!(killed >= 1, "the listener's connection at least");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let after: BTreeSet<i64> = publish_batch(&db.pool, "orders", (1..=100).map(|i| event("orders.after", i)))
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.0)
        .collect();
    wait_until(WAIT, "the events published after the connections died", || async { seen.ids().is_superset(&after) })
        .await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 101);
}

/// Events published while the LISTEN connection is being re-established
/// (right after it was killed) are not lost: once listening again, the
/// notifier wakes the subscribers to fetch what they may have missed. (The
/// driver's retry after its own killed connection often fetches them first;
/// this test guards the whole path, it did not catch the reconnect window
/// the notifier now closes.)
#[tokio::test]
async fn events_published_while_the_listener_reconnects_are_not_lost() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default())]).await;
    let seen = Seen::default();
    let h = listening_recorder(&db, &seen).await;
    publish(&db.pool, "orders", event("orders.before", 0)).await.unwrap();
    wait_until(WAIT, "the first event", || async { seen.len() == 1 }).await;
    for round in 1..=5 {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(&db.direct)
        .await
        .unwrap();
        // At once: while the listener is still reconnecting.
        let id = publish(&db.direct, "orders", event("orders.after", round)).await.unwrap();
        wait_until(WAIT, &format!("the event of round {round}"), || async { seen.ids().contains(&id.0) }).await;
    }
    h.shutdown(Duration::from_secs(5)).await;
}

/// A paused consumer's subscriber keeps running and claims nothing; its
/// events accumulate as available tasks, and all of them are handled once
/// it is resumed. Pausing an unknown consumer or stream is a typed error.
#[tokio::test]
async fn a_paused_consumer_claims_nothing_until_resumed_and_misses_nothing() {
    let db = TestDb::new().await;
    setup(&db, &[("c", ConsumerOptions::default())]).await;
    let seen = Seen::default();
    let h = recorder(&db.pool, "orders", "c", &seen).await;
    publish(&db.pool, "orders", event("orders.first", 0)).await.unwrap();
    wait_until(WAIT, "the first event", || async { seen.len() == 1 }).await;

    let paused = sluice::pause_consumer(&db.pool, "orders", "c").await.unwrap();
    assert!(paused.paused);
    assert!(sluice::pause_consumer(&db.pool, "orders", "c").await.unwrap().paused, "pausing twice is no error");
    publish_batch(&db.pool, "orders", (1..=20).map(|i| event("orders.while_paused", i))).await.unwrap();
    wait_until(WAIT, "the paused consumer's events waiting as available tasks", || async {
        task_states(&db.direct, "c").await == vec![("available".to_string(), 20)]
    })
    .await;
    // Several polls later, still nothing claimed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.len(), 1, "a paused consumer's subscriber claimed tasks");
    assert!(!h.is_finished());

    let resumed = sluice::resume_consumer(&db.pool, "orders", "c").await.unwrap();
    assert!(!resumed.paused);
    wait_until(WAIT, "every event once resumed", || async { seen.len() == 21 }).await;
    h.shutdown(Duration::from_secs(5)).await;

    let missing = sluice::pause_consumer(&db.pool, "orders", "nobody").await.unwrap_err();
    assert!(matches!(missing, sluice::Error::ConsumerNotFound { .. }), "{missing:?}");
    let missing = sluice::resume_consumer(&db.pool, "nowhere", "c").await.unwrap_err();
    assert!(matches!(missing, sluice::Error::StreamNotFound { .. }), "{missing:?}");
    assert!(!sluice::get_consumer(&db.pool, "orders", "c").await.unwrap().paused);
}
