//! Bounded storage (issue 10): dead letters and the audit log are kept for
//! their retention and then removed by housekeeping, in bounded batches;
//! retention settings are validated and can be changed on a live consumer
//! without losing anything.

use std::time::Duration;

use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, get_consumer, publish_batch, sub, update_consumer, update_stream, ConsumerOptions,
    Error, HandlerError, InvalidInput, Message, NewEvent, StreamOptions, Subscription,
};
use support::{wait_until, TestDb};

const WAIT: Duration = Duration::from_secs(30);

fn job(n: i64) -> NewEvent {
    NewEvent::new("jobs.run", &json!({ "n": n })).unwrap()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

/// Every handler call acks its task.
async fn acking_subscriber(db: &TestDb) -> sluice::SubscriberHandle {
    sub(
        &db.pool,
        Subscription::new("jobs", "c").poll_interval(Duration::from_millis(100)),
        |_msg: Message<Value>| async { Ok::<_, HandlerError>(()) },
    )
    .await
    .unwrap()
}

/// Every handler call dead-letters its task (with a log entry).
async fn discarding_subscriber(db: &TestDb) -> sluice::SubscriberHandle {
    sub(
        &db.pool,
        Subscription::new("jobs", "c").poll_interval(Duration::from_millis(100)),
        |_msg: Message<Value>| async { Err::<(), _>(HandlerError::discard("malformed")) },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn dead_letters_and_the_log_are_kept_for_their_retention_then_removed() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    let options =
        ConsumerOptions::default().dead_retention(Duration::from_secs(2)).log_retention(Duration::from_secs(3));
    create_consumer(&db.pool, "jobs", "c", options).await.unwrap();
    let h = discarding_subscriber(&db).await;
    publish_batch(&db.pool, "jobs", (1..=20).map(job)).await.unwrap();
    wait_until(WAIT, "20 dead letters", || async {
        count(&db, "SELECT count(*) FROM sluice.tasks WHERE state = 'discarded'").await == 20
    })
    .await;
    // Kept while within their retention.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM sluice.tasks WHERE state = 'discarded'").await, 20);
    assert_eq!(count(&db, "SELECT count(*) FROM sluice.task_log").await, 20);
    // Then removed: the dead letters first, the log a second later.
    wait_until(WAIT, "the dead letters removed", || async {
        count(&db, "SELECT count(*) FROM sluice.tasks").await == 0
    })
    .await;
    wait_until(WAIT, "the log removed", || async { count(&db, "SELECT count(*) FROM sluice.task_log").await == 0 })
        .await;
    h.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_longer_retention_set_on_a_live_consumer_keeps_what_is_stored() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    let options = ConsumerOptions::default().dead_retention(Duration::from_secs(3));
    create_consumer(&db.pool, "jobs", "c", options).await.unwrap();
    let h = discarding_subscriber(&db).await;
    publish_batch(&db.pool, "jobs", (1..=10).map(job)).await.unwrap();
    wait_until(WAIT, "10 dead letters", || async {
        count(&db, "SELECT count(*) FROM sluice.tasks WHERE state = 'discarded'").await == 10
    })
    .await;
    // While the subscriber runs, keep dead letters for a day instead.
    let current = get_consumer(&db.pool, "jobs", "c").await.unwrap();
    let longer = ConsumerOptions::from(&current).dead_retention(Duration::from_secs(86_400));
    let updated = update_consumer(&db.pool, "jobs", "c", longer).await.unwrap();
    assert_eq!(updated.dead_retention, Duration::from_secs(86_400));
    assert_eq!(updated.include, current.include, "the other settings are kept");
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM sluice.tasks WHERE state = 'discarded'").await, 10);
}

#[tokio::test]
async fn bad_retention_settings_are_typed_errors_and_change_nothing() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let before = get_consumer(&db.pool, "jobs", "c").await.unwrap();
    let century = Duration::from_secs(101 * 366 * 86_400);
    let setting_of = |e: Error| match e {
        Error::Invalid(InvalidInput::Setting { setting, reason }) => (setting, reason),
        other => panic!("expected a setting error, got {other:?}"),
    };
    let cases: [(ConsumerOptions, &str, &str); 5] = [
        (ConsumerOptions::default().dead_retention(Duration::ZERO), "dead_retention", "more than zero"),
        (ConsumerOptions::default().log_retention(Duration::ZERO), "log_retention", "more than zero"),
        (ConsumerOptions::default().dead_retention(century), "dead_retention", "100 years"),
        (ConsumerOptions::default().log_retention(century), "log_retention", "100 years"),
        (ConsumerOptions::default().completed_retention(century), "completed_retention", "100 years"),
    ];
    for (options, name, why) in cases {
        let (setting, reason) = setting_of(create_consumer(&db.pool, "jobs", "d", options.clone()).await.unwrap_err());
        assert_eq!((setting, reason.contains(why)), (name, true), "create: {reason}");
        let (setting, reason) = setting_of(update_consumer(&db.pool, "jobs", "c", options).await.unwrap_err());
        assert_eq!((setting, reason.contains(why)), (name, true), "update: {reason}");
    }
    for retention in [Duration::ZERO, century] {
        let e = update_stream(&db.pool, "jobs", StreamOptions::default().event_retention(retention)).await.unwrap_err();
        assert_eq!(setting_of(e).0, "event_retention");
    }
    assert_eq!(get_consumer(&db.pool, "jobs", "c").await.unwrap(), before, "nothing changed");
    assert!(matches!(get_consumer(&db.pool, "jobs", "d").await, Err(Error::ConsumerNotFound { .. })));
    let e = update_consumer(&db.pool, "jobs", "nobody", ConsumerOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::ConsumerNotFound { .. }), "{e:?}");
    let e = update_stream(&db.pool, "nothing", StreamOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::StreamNotFound { .. }), "{e:?}");
    let stream = update_stream(&db.pool, "jobs", StreamOptions::default().event_retention(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(stream.event_retention, Duration::from_secs(60));
}

/// The defaults: dead letters for 7 days, the log for 30.
#[tokio::test]
async fn retention_defaults_are_a_week_of_dead_letters_and_a_month_of_log() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    let c = create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    assert_eq!(c.dead_retention, ConsumerOptions::DEAD_RETENTION_DEFAULT);
    assert_eq!(c.dead_retention, Duration::from_secs(7 * 86_400));
    assert_eq!(c.log_retention, Duration::from_secs(30 * 86_400));
    assert_eq!(c.completed_retention, Duration::ZERO);
}

/// Storage statistics: every table with its rows, dead rows and size, and
/// whether the server runs autovacuum.
#[tokio::test]
async fn storage_stats_show_every_table_its_rows_dead_rows_and_size() {
    let empty = TestDb::empty().await;
    assert!(matches!(sluice::storage_stats(&empty.pool).await, Err(Error::NotMigrated)));

    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let h = acking_subscriber(&db).await;
    publish_batch(&db.pool, "jobs", (1..=300).map(job)).await.unwrap();
    wait_until(WAIT, "every task acked", || async { count(&db, "SELECT count(*) FROM sluice.tasks").await == 0 }).await;
    h.shutdown(Duration::from_secs(5)).await;

    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum").fetch_one(&db.pool).await.unwrap();
    // The server's statistics are flushed a moment after each transaction.
    wait_until(WAIT, "the events counted", || async {
        let stats = sluice::storage_stats(&db.pool).await.unwrap();
        stats.table("events").is_some_and(|t| t.live_rows >= 300 && t.total_bytes > 0)
    })
    .await;
    let stats = sluice::storage_stats(&db.pool).await.unwrap();
    assert_eq!(stats.autovacuum, autovacuum == "on");
    let names: Vec<&str> = stats.tables.iter().map(|t| t.table_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "consumers",
            "event_partitioning",
            "event_partitions",
            "events",
            "freed_keys",
            "gateway_clients",
            "gateway_keys",
            "gateway_publishes",
            "streams",
            "task_log",
            "tasks",
            "throughput",
            "workers"
        ]
    );
}

/// Tasks name their event's transaction id (for the partitioned events to
/// come), whichever path made them: leased at once to a hungry subscriber,
/// queued as available by a refill, or inserted by hand without it.
#[tokio::test]
async fn every_task_names_its_events_transaction_id() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    let keep = ConsumerOptions::default().completed_retention(Duration::from_secs(3600));
    create_consumer(&db.pool, "jobs", "c", keep.clone()).await.unwrap();
    create_consumer(&db.pool, "jobs", "queued", keep).await.unwrap();
    let h = acking_subscriber(&db).await;
    publish_batch(&db.pool, "jobs", (1..=50).map(job)).await.unwrap();
    wait_until(WAIT, "50 completed", || async {
        count(&db, "SELECT count(*) FROM sluice.tasks WHERE state = 'completed'").await == 50
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    // The other consumer's tasks are materialized as available by a refill.
    let queued: i32 =
        sqlx::query_scalar("SELECT id FROM sluice.consumers WHERE name = 'queued'").fetch_one(&db.pool).await.unwrap();
    support::refill(&db.pool, queued, 1000).await.unwrap();
    // And one written by hand, without it.
    sqlx::query(
        "DELETE FROM sluice.tasks WHERE consumer_id = (SELECT id FROM sluice.consumers WHERE name = 'queued')
           AND event_id = (SELECT min(id) FROM sluice.events)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sluice.tasks (consumer_id, event_id, position)
         SELECT c.id, e.id, e.id FROM sluice.consumers c, sluice.events e
         WHERE c.name = 'queued' AND e.id = (SELECT min(id) FROM sluice.events)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM sluice.tasks").await, 100);
    let wrong = count(
        &db,
        "SELECT count(*) FROM sluice.tasks t JOIN sluice.events e ON e.id = t.event_id
         WHERE t.event_txid IS DISTINCT FROM e.txid",
    )
    .await;
    assert_eq!(wrong, 0);
}
