//! Event retention on partitions (issue 10): sluice.events is partitioned by
//! transaction id; housekeeping creates partitions ahead and drops whole
//! partitions once their events are past retention, materialized by every
//! consumer, and no task of theirs is pending. The refill reads only the
//! partitions it needs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice::{
    create_consumer, create_stream, delete_consumer, publish, ConsumerOptions, NewEvent, Start, StreamOptions,
    Subscription,
};
use sqlx::Connection as _;
use support::{wait_until, TestDb};

const WAIT: Duration = Duration::from_secs(60);

fn job(n: i64) -> NewEvent {
    NewEvent::new("jobs.run", &json!({ "n": n })).unwrap()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

/// Small partitions, maintained at every housekeeping run, retention 1 s.
/// The empty partition the migration made ahead (a million transaction ids)
/// goes, so that the small ones are made from now on.
async fn setup(db: &TestDb) {
    sqlx::raw_sql(
        "UPDATE sluice.event_partitioning SET span = 20, every = '0';
         DO $$ DECLARE p text; BEGIN
             FOR p IN SELECT name FROM sluice.event_partitions WHERE name <> 'events_0' LOOP
                 EXECUTE format('DROP TABLE sluice.%I', p);
                 DELETE FROM sluice.event_partitions WHERE name = p;
             END LOOP;
         END $$;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    create_stream(&db.pool, "jobs", StreamOptions::default().event_retention(Duration::from_secs(1))).await.unwrap();
}

async fn recorder(db: &TestDb, consumer: &str, seen: &Arc<Mutex<Vec<i64>>>) -> sluice::SubscriberHandle {
    let subscription = Subscription::new("jobs", consumer).poll_interval(Duration::from_millis(100));
    support::record_n(&db.pool, subscription, seen).await
}

/// One publish per transaction, so the events spread over many partitions.
async fn publish_each(db: &TestDb, n: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(publish(&db.pool, "jobs", job(i)).await.unwrap().0);
    }
    ids
}

async fn stored(db: &TestDb, ids: &[i64]) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sluice.events WHERE id = ANY ($1)")
        .bind(ids)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn events_past_retention_leave_with_their_partitions_while_a_subscriber_runs() {
    let db = TestDb::new().await;
    setup(&db).await;
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let h = recorder(&db, "c", &seen).await;
    let ids = publish_each(&db, 60).await;
    wait_until(WAIT, "60 handled", || async { seen.lock().unwrap().len() == 60 }).await;
    // Partitions are made ahead of the next transaction id...
    wait_until(WAIT, "partitions ahead", || async {
        count(
            &db,
            "SELECT count(*) FROM sluice.event_partitions
             WHERE hi > pg_snapshot_xmax(pg_current_snapshot())",
        )
        .await
            >= 1
    })
    .await;
    // ...and the old ones go, events and all, without a row deleted.
    wait_until(WAIT, "the handled events gone", || async { stored(&db, &ids).await == 0 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let live: i64 = count(&db, "SELECT count(*) FROM sluice.event_partitions").await;
    assert!(live >= 1, "the current partitions stay");
    assert_eq!(count(&db, "SELECT count(*) FROM sluice.events_default").await, 0, "nothing overflowed");
}

#[tokio::test]
async fn a_lagging_consumer_keeps_every_event_it_has_not_materialized_and_gets_them_all() {
    let db = TestDb::new().await;
    setup(&db).await;
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    // No subscriber for this one yet: its position stays where it started.
    create_consumer(&db.pool, "jobs", "lagging", ConsumerOptions::default().start(Start::Beginning)).await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let h = recorder(&db, "c", &seen).await;
    let ids = publish_each(&db, 60).await;
    wait_until(WAIT, "60 handled by the running consumer", || async { seen.lock().unwrap().len() == 60 }).await;
    // Many housekeeping runs later, past retention: nothing of it is gone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(stored(&db, &ids).await, 60, "the lagging consumer holds every event back");

    let late: Arc<Mutex<Vec<i64>>> = Arc::default();
    let lagging = recorder(&db, "lagging", &late).await;
    wait_until(WAIT, "the lagging consumer gets all 60", || async { late.lock().unwrap().len() == 60 }).await;
    let mut got = late.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (1..=60).collect::<Vec<_>>());
    wait_until(WAIT, "then the events go", || async { stored(&db, &ids).await == 0 }).await;
    lagging.shutdown(Duration::from_secs(5)).await;
    h.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn deleting_a_lagging_consumer_lets_its_events_go() {
    let db = TestDb::new().await;
    setup(&db).await;
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "gone", ConsumerOptions::default().start(Start::Beginning)).await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let h = recorder(&db, "c", &seen).await;
    let ids = publish_each(&db, 40).await;
    wait_until(WAIT, "40 handled", || async { seen.lock().unwrap().len() == 40 }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stored(&db, &ids).await, 40);
    delete_consumer(&db.pool, "jobs", "gone").await.unwrap();
    wait_until(WAIT, "the events go", || async { stored(&db, &ids).await == 0 }).await;
    h.shutdown(Duration::from_secs(5)).await;
}

/// The refill's reads name the transaction ids they want, so Postgres plans
/// them against the partitions that hold those ids only.
#[tokio::test]
async fn the_refill_reads_only_the_partitions_it_needs() {
    let db = TestDb::new().await;
    setup(&db).await;
    // Kept, so that many partitions pile up.
    let hour = StreamOptions::default().event_retention(Duration::from_secs(3600));
    sluice::update_stream(&db.pool, "jobs", hour).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let h = recorder(&db, "c", &seen).await;
    // Housekeeping is run here between small batches rather than left to the
    // subscriber's timer: on a busy machine a timer run can be skipped (its
    // lock taken by a publisher) and fewer partitions made.
    let mut published = 0;
    while count(&db, "SELECT count(*) FROM sluice.event_partitions").await < 10 {
        assert!(published < 2_000, "partitions are made ahead as transaction ids advance");
        published += publish_each(&db, 10).await.len();
        count(&db, "SELECT created::bigint FROM sluice.maintain_event_partitions()").await;
    }
    wait_until(WAIT, "all handled", || async { seen.lock().unwrap().len() == published }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let partitions = count(&db, "SELECT count(*) FROM sluice.event_partitions").await;
    // The window of a refill that is up to date: from the position on.
    let (from, to): (String, String) = sqlx::query_as(
        "SELECT pg_snapshot_xmax(position)::text, pg_snapshot_xmax(pg_current_snapshot())::text
         FROM sluice.consumers WHERE name = 'c'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // The refill's own statement shape, planned for its values (fetch_v2 uses custom plans).
    let plan: String = sqlx::query_scalar::<_, String>(&format!(
        "EXPLAIN (COSTS OFF) SELECT e.id FROM sluice.events e
         WHERE e.stream_id = 1 AND e.txid >= '{from}'::xid8 AND e.txid < '{to}'::xid8
         ORDER BY e.txid, e.id LIMIT 1000"
    ))
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .join("\n");
    let scanned = plan.matches(" on events_").count();
    assert!(scanned <= 2, "{scanned} of {partitions} partitions in the plan:\n{plan}");
}

/// Autovacuum analyzes a partition while it fills; the statistics then end
/// at the transaction ids of that moment, and for the later ones (a
/// consumer's window) the planner expects a single row. The hungry refill
/// still looks up each event it leases once, instead of scanning the whole
/// window for each of them (seen on a private cluster with autovacuum on: a
/// refill of 1,000 tasks took 6–8 s, and the soak fell to a fifth).
#[tokio::test]
async fn a_refill_reads_each_leased_event_once_however_stale_the_statistics() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let batch = |from: i64| (from..from + 1_000).map(job).collect::<Vec<_>>();
    for b in 0..5 {
        sluice::publish_batch(&db.pool, "jobs", batch(b * 1_000)).await.unwrap();
    }
    sqlx::query("ANALYZE sluice.events").execute(&db.pool).await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let h = recorder(&db, "c", &seen).await;
    wait_until(WAIT, "the first 5,000 handled", || async { seen.lock().unwrap().len() == 5_000 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    // Past the statistics: five more transactions of 1,000 events.
    for b in 5..10 {
        sluice::publish_batch(&db.pool, "jobs", batch(b * 1_000)).await.unwrap();
    }

    // One refill as a hungry subscriber makes it, and the rows it read from
    // the events' partitions, in the same transaction of a new connection
    // (the counts include what the connection did before and has not
    // reported yet).
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sluice.fetch_v2(
             (SELECT id FROM sluice.consumers WHERE name = 'c'), gen_random_uuid(), '30 s', 1000, 10000, true,
             100000000)
         WHERE event_id IS NOT NULL",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let read: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)), 0)::bigint
         FROM pg_stat_xact_user_tables WHERE schemaname = 'sluice' AND relname LIKE 'events%'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(leased, 1_000);
    assert!(read <= 3 * leased, "{read} event rows read to lease {leased}");
}
