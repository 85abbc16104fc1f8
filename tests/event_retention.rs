//! Event retention on partitions (issue 10): sluice.events is partitioned by
//! transaction id; housekeeping creates partitions ahead and drops whole
//! partitions once their events are past retention, materialized by every
//! consumer, and no task of theirs is pending. The refill reads only the
//! partitions it needs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sluice::{
    create_consumer, create_stream, delete_consumer, publish, set_event_partitioning, ConsumerOptions,
    EventPartitioning, NewEvent, PartitioningChange, Start, StreamOptions, Subscription,
};
use sqlx::Connection as _;
use support::{wait_until, TestDb};

/// Generous: the test cluster is shared, and a transaction left open in any
/// of its databases holds back the sealing of partitions in every one
/// (snapshots are cluster-wide).
const WAIT: Duration = Duration::from_secs(120);

fn job(n: i64) -> NewEvent {
    NewEvent::new("jobs.run", &json!({ "n": n })).unwrap()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

/// Small partitions, maintained at every housekeeping run, retention 1 s:
/// set through the library, which applies the span at once (the partition
/// the migration made ahead, a million transaction ids, is cut).
async fn setup(db: &TestDb) {
    let small = PartitioningChange::default().span(20).every(Duration::ZERO);
    sluice::set_event_partitioning(&db.pool, small).await.unwrap();
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

/// The partition of transaction id `txid` is gone (the kept events'
/// partition aside).
async fn partition_dropped(db: &TestDb, txid: &str) -> bool {
    sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM sluice.event_partitions
                            WHERE lo <= $1::xid8 AND $1::xid8 < hi AND name ~ '^events_[0-9]+$')",
    )
    .bind(txid)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn txid_of(db: &TestDb, id: sluice::EventId) -> String {
    sqlx::query_scalar("SELECT txid::text FROM sluice.events WHERE id = $1")
        .bind(id.0)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// A dead letter outlives its event's partition: once every other event of
/// the partition is past retention and the partition is dropped, the dead
/// letter is still listed, shown with its event, and can be retried (its
/// handler gets the event) or cancelled; the key it holds
/// (`hold_key_on_dead_letter`) is released by either.
#[tokio::test]
async fn a_dead_letter_past_the_event_retention_stays_listed_retriable_and_cancellable() {
    use sluice::{cancel_task, get_task, list_tasks, retry_task, task_event, TaskFilter, TaskState};
    use std::collections::HashSet;

    let db = TestDb::new().await;
    setup(&db).await;
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default().hold_key_on_dead_letter()).await.unwrap();
    // Events whose n is poisoned are dead-lettered; the others recorded.
    let poisoned: Arc<Mutex<HashSet<i64>>> = Arc::new(Mutex::new(HashSet::from([1001, 1002])));
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (p, s) = (poisoned.clone(), seen.clone());
    let h = sluice::sub(
        &db.pool,
        Subscription::new("jobs", "c").poll_interval(Duration::from_millis(100)),
        move |msg: sluice::Message<serde_json::Value>| {
            let (p, s) = (p.clone(), s.clone());
            async move {
                let n = msg.payload()["n"].as_i64().unwrap();
                if p.lock().unwrap().contains(&n) {
                    return Err(sluice::HandlerError::discard("poisoned"));
                }
                s.lock().unwrap().push(n);
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    let keyed = |n: i64, key: &str| job(n).key(key);
    // Key "cancel": 1001 is dead-lettered, 1101 waits behind it.
    // Key "retry": 1002 is dead-lettered, 1102 waits behind it.
    let first = publish(&db.pool, "jobs", keyed(1001, "cancel")).await.unwrap();
    publish(&db.pool, "jobs", keyed(1002, "retry")).await.unwrap();
    let fillers = publish_each(&db, 40).await;
    // A gap, so that the waiting events' partition (kept: they are pending)
    // is not the fillers'.
    publish_each(&db, 40).await;
    publish(&db.pool, "jobs", keyed(1101, "cancel")).await.unwrap();
    publish(&db.pool, "jobs", keyed(1102, "retry")).await.unwrap();
    let first_txid = txid_of(&db, first).await;
    // Keep transaction ids moving, so that partitions are sealed and dropped.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !partition_dropped(&db, &first_txid).await || stored(&db, &fillers).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead letters' partition and the fillers' are dropped past retention"
        );
        publish_each(&db, 5).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Listed, shown, with their events.
    let dead =
        list_tasks(&db.pool, "jobs", "c", &TaskFilter::default().state(TaskState::Discarded), 100, None).await.unwrap();
    let partitions = sluice::list_event_partitions(&db.pool).await.unwrap();
    assert!(
        partitions.iter().any(|p| p.state == sluice::PartitionState::Kept),
        "the dead letters' events are kept: {partitions:?}"
    );
    let dead_ids: Vec<i64> = dead.tasks.iter().map(|t| t.event_id.0).collect();
    assert_eq!(dead_ids.len(), 2, "both dead letters listed: {dead_ids:?}");
    let [cancel_id, retry_id] = [dead.tasks[0].event_id, dead.tasks[1].event_id];
    assert_eq!(get_task(&db.pool, "jobs", "c", cancel_id).await.unwrap().state, TaskState::Discarded);
    let event = task_event(&db.pool, "jobs", "c", retry_id).await.unwrap();
    assert_eq!(event.payload, json!({ "n": 1002 }));
    assert_eq!(event.key.as_deref(), Some("retry"));
    // The keys are held: 1101 and 1102 have not run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!seen.lock().unwrap().iter().any(|n| *n > 1100), "the held keys' later events wait");

    // Cancelled: the key goes on.
    cancel_task(&db.pool, "jobs", "c", cancel_id, Some("given up")).await.unwrap();
    assert_eq!(get_task(&db.pool, "jobs", "c", cancel_id).await.unwrap().state, TaskState::Cancelled);
    wait_until(WAIT, "1101 runs once its key is released", || async { seen.lock().unwrap().contains(&1101) }).await;
    // Retried: the handler gets the event, then the key goes on.
    poisoned.lock().unwrap().clear();
    retry_task(&db.pool, "jobs", "c", retry_id, Some("fixed")).await.unwrap();
    wait_until(WAIT, "1002 runs again, then 1102", || async {
        let seen = seen.lock().unwrap();
        let at = |n| seen.iter().position(|m| *m == n);
        matches!((at(1002), at(1102)), (Some(a), Some(b)) if a < b)
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
}

/// The partition holding transaction id `txid` (a range partition, not the
/// kept events').
async fn partition_of(db: &TestDb, txid: &str) -> Option<sluice::EventPartition> {
    let txid: i64 = txid.parse().unwrap();
    sluice::list_event_partitions(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.state != sluice::PartitionState::Kept && p.from_txid <= txid && txid < p.to_txid)
}

/// A quiet database: a handful of transactions, never near the span of a
/// million transaction ids. With the shortest partition age and a retention
/// of 1 s, handled events go within retention + the partition age + three
/// maintenance intervals (the partition is found written into; cut and
/// sealed; dropped), set through the library alone.
#[tokio::test]
async fn on_a_quiet_database_handled_events_go_within_retention_plus_the_partition_age() {
    let db = TestDb::new().await;
    let (age, every, retention) = (EventPartitioning::MAX_AGE_MIN, Duration::from_secs(1), Duration::from_secs(1));
    let set = set_event_partitioning(&db.pool, PartitioningChange::default().max_age(age).every(every)).await.unwrap();
    assert_eq!((set.span, set.max_age, set.every), (EventPartitioning::SPAN_DEFAULT, age, every));
    create_stream(&db.pool, "jobs", StreamOptions::default().event_retention(retention)).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let h = recorder(&db, "c", &seen).await;
    let ids = publish_each(&db, 3).await;
    wait_until(WAIT, "3 handled", || async { seen.lock().unwrap().len() == 3 }).await;
    let handled = tokio::time::Instant::now();
    // The bound is retention + age + 3 maintenance intervals (5 s here); the wait
    // allows for a busy shared cluster, where any open transaction delays
    // the seal. Before partitions were closed by age, these events stayed
    // until a million transaction ids had gone by.
    let bound = retention + age + 3 * every;
    wait_until(bound + WAIT, "the handled events gone", || async { stored(&db, &ids).await == 0 }).await;
    eprintln!("handled events gone {:?} after they were handled (bound {bound:?})", handled.elapsed());
    h.shutdown(Duration::from_secs(5)).await;
    let span = sluice::event_partitioning(&db.pool).await.unwrap().span;
    assert_eq!(span, EventPartitioning::SPAN_DEFAULT, "partitions cut by age, not by span");
}

/// A transaction that began before a cut by age (it wrote a business row
/// first, as the outbox pattern does) and publishes after it: its
/// transaction id is below the cut, so its event lands in the cut
/// partition, which stays unsealed (its events kept) while the transaction
/// is open; the event is delivered once it commits, and then goes with its
/// partition.
#[tokio::test]
async fn a_transaction_open_across_a_cut_by_age_publishes_into_the_cut_partition() {
    let db = TestDb::new().await;
    let change = PartitioningChange::default().max_age(EventPartitioning::MAX_AGE_MIN).every(Duration::ZERO);
    set_event_partitioning(&db.pool, change).await.unwrap();
    create_stream(&db.pool, "jobs", StreamOptions::default().event_retention(Duration::from_secs(1))).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let h = recorder(&db, "c", &seen).await;
    let first = publish(&db.pool, "jobs", job(1)).await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    let txid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut *tx).await.unwrap();
    wait_until(WAIT, "the partition cut by age", || async {
        partition_of(&db, &txid).await.is_some_and(|p| p.state == sluice::PartitionState::Closing)
    })
    .await;
    let second = publish(&mut *tx, "jobs", job(2)).await.unwrap();
    // Past retention, many maintenance runs later: not sealed, nothing gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = partition_of(&db, &txid).await.unwrap();
    assert_eq!(cut.state, sluice::PartitionState::Closing, "{cut:?}");
    assert_eq!(stored(&db, &[first.0]).await, 1, "the open transaction's partition keeps its events");
    tx.commit().await.unwrap();

    let landed: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM sluice.events WHERE id = $1")
        .bind(second.0)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(landed, format!("sluice.{}", cut.name), "the event is in the cut partition");
    wait_until(WAIT, "both delivered", || async { seen.lock().unwrap().len() == 2 }).await;
    wait_until(WAIT, "then both gone", || async { stored(&db, &[first.0, second.0]).await == 0 }).await;
    h.shutdown(Duration::from_secs(5)).await;
}

/// `sluice partitions …` as a user runs it: exit code, stdout, stderr.
async fn sluice_cli(db: &TestDb, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(support::sluice_binary().await)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .arg("--database-url")
        .arg(&db.url)
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sluice partitions set` changes the span and the age, and the partitions
/// made ahead follow at once; `sluice partitions list` shows them; bad
/// values are one line naming the setting, and change nothing.
#[tokio::test]
async fn the_cli_sets_and_lists_the_partitioning() {
    let db = TestDb::new().await;
    let (code, stdout, stderr) = sluice_cli(&db, &["partitions", "set", "--span", "20", "--max-age", "1s"]).await;
    assert_eq!((code, stderr.as_str()), (Some(0), ""), "{stdout}");
    assert!(stdout.contains("span         20 transaction ids") && stdout.contains("max age      1s"), "{stdout}");

    let (code, stdout, stderr) = sluice_cli(&db, &["--json", "partitions", "list"]).await;
    assert_eq!((code, stderr.as_str()), (Some(0), ""), "{stdout}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["settings"]["span"], 20);
    assert_eq!(listed["settings"]["max_age_ms"], 1000);
    let partitions = listed["partitions"].as_array().unwrap();
    let ahead: Vec<_> = partitions.iter().filter(|p| p["state"] == "ahead").collect();
    assert!(!ahead.is_empty(), "{partitions:?}");
    for p in ahead {
        assert_eq!(p["to_txid"].as_i64().unwrap() - p["from_txid"].as_i64().unwrap(), 20, "made again: {p}");
    }
    let current = partitions.iter().find(|p| p["state"] == "current").expect("a current partition");
    assert!(current["to_txid"].as_i64().unwrap() - current["from_txid"].as_i64().unwrap() <= 40, "cut: {current}");
    let (code, stdout, _) = sluice_cli(&db, &["partitions", "list"]).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("PARTITION") && stdout.contains("ahead") && stdout.contains("current"), "{stdout}");

    for (args, names) in [
        (&["partitions", "set", "--max-age", "500ms"][..], "max_age"),
        (&["partitions", "set", "--span", "0"][..], "span"),
        (&["partitions", "set", "--every", "2h"][..], "every"),
        (&["partitions", "set", "--max-age", "soon"][..], "--max-age"),
    ] {
        let (code, stdout, stderr) = sluice_cli(&db, args).await;
        assert_eq!((code, stdout.as_str()), (Some(1), ""), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(names), "{args:?}: {stderr}");
    }
    let now = sluice::event_partitioning(&db.pool).await.unwrap();
    assert_eq!((now.span, now.max_age), (20, Duration::from_secs(1)), "nothing changed");
}

/// Bad settings are typed errors naming the setting; a row written by hand
/// with an age below the floor is refused by the table.
#[tokio::test]
async fn bad_partitioning_settings_are_typed_errors_and_change_nothing() {
    let db = TestDb::new().await;
    let before = sluice::event_partitioning(&db.pool).await.unwrap();
    assert_eq!(
        (before.span, before.max_age, before.every),
        (EventPartitioning::SPAN_DEFAULT, EventPartitioning::MAX_AGE_DEFAULT, EventPartitioning::EVERY_DEFAULT)
    );
    let century = Duration::from_secs(101 * 366 * 86_400);
    for (change, name) in [
        (PartitioningChange::default().span(0), "span"),
        (PartitioningChange::default().span(EventPartitioning::SPAN_MAX + 1), "span"),
        (PartitioningChange::default().max_age(Duration::from_millis(999)), "max_age"),
        (PartitioningChange::default().max_age(century), "max_age"),
        (PartitioningChange::default().every(Duration::from_secs(3601)), "every"),
    ] {
        match set_event_partitioning(&db.pool, change).await {
            Err(sluice::Error::Invalid(sluice::InvalidInput::Setting { setting, .. })) => assert_eq!(setting, name),
            other => panic!("expected a setting error for {name}, got {other:?}"),
        }
    }
    assert_eq!(sluice::event_partitioning(&db.pool).await.unwrap(), before, "nothing changed");
    let by_hand = sqlx::query("UPDATE sluice.event_partitioning SET max_age = '10 ms'").execute(&db.pool).await;
    let e = by_hand.unwrap_err();
    assert_eq!(e.as_database_error().and_then(|d| d.code()).as_deref(), Some("23514"), "{e}");
}

/// Event `id` (of transaction `txid`) is in the kept events' partition,
/// its own partition gone.
async fn kept_past_its_partition(db: &TestDb, id: sluice::EventId, txid: &str) -> bool {
    let kept: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sluice.events WHERE id = $1 AND tableoid::regclass::text = 'sluice.events_kept')",
    )
    .bind(id.0)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    kept && partition_dropped(db, txid).await
}

/// The kept events go with their dead letters: a dead letter's event stays
/// in the kept events' partition past its own partition, and once the dead
/// letter is purged (its consumer's dead retention, shortened meanwhile),
/// the next partition drop leaves it out.
#[tokio::test]
async fn a_kept_event_goes_once_its_dead_letter_is_purged() {
    let db = TestDb::new().await;
    setup(&db).await;
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let h = sluice::sub(
        &db.pool,
        Subscription::new("jobs", "c").poll_interval(Duration::from_millis(100)),
        |msg: sluice::Message<serde_json::Value>| async move {
            match msg.payload()["n"].as_i64() {
                Some(0) => Err(sluice::HandlerError::discard("poisoned")),
                _ => Ok(()),
            }
        },
    )
    .await
    .unwrap();
    let dead = publish(&db.pool, "jobs", job(0)).await.unwrap();
    let txid = txid_of(&db, dead).await;
    // Transaction ids keep moving, so that partitions are sealed and dropped.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !kept_past_its_partition(&db, dead, &txid).await {
        assert!(tokio::time::Instant::now() < deadline, "the dead letter's event kept past its partition");
        publish_each(&db, 5).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let current = sluice::get_consumer(&db.pool, "jobs", "c").await.unwrap();
    let short = ConsumerOptions::from(&current).dead_retention(Duration::from_secs(1));
    sluice::update_consumer(&db.pool, "jobs", "c", short).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while stored(&db, &[dead.0]).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the dead letter's event goes after its purge");
        publish_each(&db, 5).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM sluice.tasks WHERE state = 'discarded'").await, 0, "purged");
}
