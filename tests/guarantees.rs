//! The core's guarantees where the subscriber's parts meet (issue 9): an open
//! transaction delays only its own task, the lease token is never reused, a
//! requeued task's second attempt keeps its lease, handlers at every
//! isolation level can settle, each worker judges its own liveness.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, get_task, publish, publish_batch, retry_task, sub, ConsumerOptions, Defer,
    HandlerError, Message, Nack, NewEvent, StreamOptions, Subscription, TaskError, TaskRef, TaskState,
};
use sqlx::{Connection as _, PgConnection};
use support::{task_states, wait_until, TestDb};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(30);

async fn setup(db: &TestDb, options: ConsumerOptions) {
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", options).await.unwrap();
}

fn fast() -> ConsumerOptions {
    ConsumerOptions::default().backoff(Duration::from_millis(10), Duration::from_millis(50))
}

fn subscription() -> Subscription {
    Subscription::new("jobs", "c").poll_interval(Duration::from_millis(100))
}

fn job(n: i64) -> NewEvent {
    NewEvent::new("jobs.run", &json!({ "n": n })).unwrap()
}

fn n_of(msg: &Message<Value>) -> i64 {
    msg.payload()["n"].as_i64().unwrap()
}

/// A subscriber whose handler counts its calls into `calls` and acks.
async fn counting(db: &TestDb, subscription: Subscription, calls: &Arc<AtomicUsize>) -> sluice::SubscriberHandle {
    let calls = calls.clone();
    sub(&db.pool, subscription, move |_msg: Message<Value>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap()
}

/// Defect 1: a handler's open transaction that deferred its task held a key
/// lock on the consumer row, and every refill of the consumer reported busy
/// until it committed.
#[tokio::test]
async fn an_open_transaction_that_deferred_delays_only_its_own_task() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let deferred = Arc::new(Notify::new());
    let (h2, r2, d2, pool) = (handled.clone(), release.clone(), deferred.clone(), db.pool.clone());
    let h = sub(&db.pool, subscription(), move |msg: Message<Value>| {
        let (handled, release, deferred, pool) = (h2.clone(), r2.clone(), d2.clone(), pool.clone());
        async move {
            if n_of(&msg) == 0 && msg.attempt() == 1 {
                let mut tx = pool.begin().await?;
                msg.defer_tx(&mut *tx, Defer::by(Duration::from_millis(10)).reason("slow")).await?;
                deferred.notify_one();
                // Keep the transaction open until the test has seen the rest handled.
                let _ = tokio::time::timeout(Duration::from_secs(20), release.notified()).await;
                tx.commit().await?;
                return Ok(());
            }
            handled.fetch_add(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    publish(&db.pool, "jobs", job(0)).await.unwrap();
    tokio::time::timeout(WAIT, deferred.notified()).await.expect("the deferral ran");
    // Hundreds of events published and handled while that transaction is open.
    for chunk in 0..5 {
        publish_batch(&db.pool, "jobs", (1..=60).map(|i| job(chunk * 100 + i))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counter = handled.clone();
    let outcome = tokio::spawn(async move {
        wait_until(Duration::from_secs(10), "300 events handled beside the open transaction", || async {
            counter.load(Ordering::SeqCst) >= 300
        })
        .await
    })
    .await;
    release.notify_one();
    h.shutdown(Duration::from_secs(5)).await;
    outcome.expect("every other event is handled while one transaction stays open");
}

/// Defect 2: `retry_task` reset the attempt, the fence of ack, so the same
/// attempt number came back and a stale ack settled the new holder's task.
#[tokio::test]
async fn a_stale_ack_after_a_manual_retry_is_refused() {
    let db = TestDb::new().await;
    setup(&db, fast().max_attempts(1).completed_retention(Duration::from_secs(3600))).await;
    let first: Arc<Mutex<Option<TaskRef>>> = Arc::default();
    let second_started = Arc::new(Notify::new());
    let finish = Arc::new(Notify::new());
    let (f2, s2, fin2) = (first.clone(), second_started.clone(), finish.clone());
    let h = sub(&db.pool, subscription(), move |msg: Message<Value>| {
        let (first, second_started, finish) = (f2.clone(), s2.clone(), fin2.clone());
        async move {
            let is_first = {
                let mut stale = first.lock().unwrap();
                let is_first = stale.is_none();
                stale.get_or_insert_with(|| msg.task().clone());
                is_first
            };
            if is_first {
                // The first holder loses the task (here: it fails for good).
                return Err(HandlerError::discard("first holder gives up"));
            }
            second_started.notify_one();
            finish.notified().await;
            Ok(())
        }
    })
    .await
    .unwrap();
    let id = publish(&db.pool, "jobs", job(1)).await.unwrap();
    wait_until(WAIT, "the first attempt to be discarded", || async {
        get_task(&db.pool, "jobs", "c", id).await.is_ok_and(|t| t.state == TaskState::Discarded)
    })
    .await;
    retry_task(&db.pool, "jobs", "c", id, Some("try again")).await.unwrap();
    tokio::time::timeout(WAIT, second_started.notified()).await.expect("the retried task is handed out again");

    let stale = first.lock().unwrap().clone().unwrap();
    let e = stale.ack(&db.pool).await.unwrap_err();
    assert!(matches!(e, TaskError::LeaseLost { .. }), "{e:?}");
    let live = get_task(&db.pool, "jobs", "c", id).await.unwrap();
    assert_eq!(live.state, TaskState::Running, "the live attempt is untouched");

    finish.notify_one();
    wait_until(WAIT, "the live attempt to complete", || async {
        get_task(&db.pool, "jobs", "c", id).await.is_ok_and(|t| t.state == TaskState::Completed)
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
}

/// Defect 3: after a requeue at the start, the first attempt's clean-up
/// dropped the second attempt from the in-flight registry; its lease lapsed
/// and a long second attempt ran a third time.
#[tokio::test]
async fn a_requeued_task_runs_its_second_attempt_once_however_long() {
    let db = TestDb::new().await;
    setup(&db, fast().lease(Duration::from_secs(1))).await;
    let attempts: Arc<Mutex<Vec<i32>>> = Arc::default();
    let a2 = attempts.clone();
    let h = sub(
        &db.pool,
        subscription().concurrency(4).heartbeat(Duration::from_millis(200)).dead_after(Duration::from_secs(2)),
        move |msg: Message<Value>| {
            let attempts = a2.clone();
            async move {
                attempts.lock().unwrap().push(msg.attempt());
                if msg.attempt() == 1 {
                    msg.nack(Nack::requeue_start()).await?;
                    // Still finishing while the second attempt starts.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                } else {
                    // Several leases long.
                    tokio::time::sleep(Duration::from_secs(4)).await;
                }
                Ok::<_, HandlerError>(())
            }
        },
    )
    .await
    .unwrap();
    let id = publish(&db.pool, "jobs", job(1)).await.unwrap();
    wait_until(WAIT, "the second attempt to finish", || async {
        attempts.lock().unwrap().len() >= 2 && get_task(&db.pool, "jobs", "c", id).await.is_err()
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2]);
}

/// Defect 4: the keeper rewrote every held task's row each beat, so a
/// handler transaction at REPEATABLE READ or SERIALIZABLE whose snapshot
/// predated a beat could not ack, nack or defer.
#[tokio::test]
async fn handlers_settle_in_transactions_of_every_isolation_level() {
    for level in ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"] {
        let db = TestDb::new().await;
        setup(&db, fast().max_attempts(1).completed_retention(Duration::from_secs(3600))).await;
        let pool = db.pool.clone();
        let outcomes: Arc<Mutex<Vec<String>>> = Arc::default();
        let o2 = outcomes.clone();
        let h = sub(
            &db.pool,
            // One at a time: concurrent serializable handlers may conflict
            // with each other, which is theirs to retry, not the queue's.
            subscription().concurrency(1).lease(Duration::from_secs(1)).heartbeat(Duration::from_millis(100)),
            move |msg: Message<Value>| {
                let (pool, outcomes) = (pool.clone(), o2.clone());
                async move {
                    let mut tx = pool.begin().await?;
                    sqlx::query(&format!("SET TRANSACTION ISOLATION LEVEL {level}")).execute(&mut *tx).await?;
                    // The snapshot is taken here, several beats before the settle.
                    sqlx::query("SELECT now()").execute(&mut *tx).await?;
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    let result = match n_of(&msg) {
                        1 => msg.ack_tx(&mut *tx).await.map(|_| "acked".to_string()),
                        2 => msg.nack_tx(&mut *tx, Nack::discard("no")).await.map(|s| s.to_string()),
                        _ => msg
                            .defer_tx(&mut *tx, Defer::by(Duration::from_secs(3600)))
                            .await
                            .map(|_| "deferred".into()),
                    };
                    let line = match result {
                        Ok(what) => {
                            tx.commit().await?;
                            what
                        }
                        Err(e) => format!("error: {e}"),
                    };
                    outcomes.lock().unwrap().push(line);
                    Ok::<_, HandlerError>(())
                }
            },
        )
        .await
        .unwrap();
        let ids = publish_batch(&db.pool, "jobs", [job(1), job(2), job(3)]).await.unwrap();
        wait_until(WAIT, "three handlers", || async { outcomes.lock().unwrap().len() == 3 }).await;
        h.shutdown(Duration::from_secs(5)).await;
        let mut seen = outcomes.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen, ["acked", "deferred", "discarded"], "at {level}");
        let states: Vec<TaskState> = futures::future::join_all(
            ids.iter().map(|id| async { get_task(&db.pool, "jobs", "c", *id).await.unwrap().state }),
        )
        .await;
        assert_eq!(states, [TaskState::Completed, TaskState::Discarded, TaskState::Scheduled], "at {level}");
    }
}

/// Defect 6: the rescuing subscriber applied its own `dead_after` to every
/// worker's heartbeat, freeing the tasks of healthy workers elsewhere.
#[tokio::test]
async fn each_worker_is_judged_dead_by_its_own_limit() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    // A slow beat with a generous limit: alive the whole time.
    let patient = sub(
        &db.pool,
        subscription().heartbeat(Duration::from_secs(4)).dead_after(Duration::from_secs(60)),
        move |_msg: Message<Value>| {
            let calls = c2.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(6)).await;
                Ok::<_, HandlerError>(())
            }
        },
    )
    .await
    .unwrap();
    let id = publish(&db.pool, "jobs", job(1)).await.unwrap();
    wait_until(WAIT, "the patient worker to start", || async { calls.load(Ordering::SeqCst) == 1 }).await;
    // A hasty worker on the same consumer, whose own limit is far shorter.
    let hasty_subscription =
        subscription().heartbeat(Duration::from_millis(100)).dead_after(Duration::from_millis(500));
    let hasty = counting(&db, hasty_subscription, &calls).await;
    wait_until(WAIT, "the task to complete", || async { get_task(&db.pool, "jobs", "c", id).await.is_err() }).await;
    hasty.shutdown(Duration::from_secs(5)).await;
    patient.shutdown(Duration::from_secs(5)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the healthy worker's task was not taken from it");
}

/// Defect 5: a position from another cluster (a dump restored, a move by
/// logical replication) is ahead of the server's transaction ids, and new
/// events were taken as already seen. The subscriber now stops with a typed
/// error, and `reset_position` replays.
#[tokio::test]
async fn a_position_from_another_cluster_stops_the_subscriber_until_replayed() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let handled: Arc<Mutex<Vec<i64>>> = Arc::default();
    let recorder = |handled: Arc<Mutex<Vec<i64>>>| {
        move |msg: Message<Value>| {
            let handled = handled.clone();
            async move {
                handled.lock().unwrap().push(n_of(&msg));
                Ok::<_, HandlerError>(())
            }
        }
    };
    let h = sub(&db.pool, subscription(), recorder(handled.clone())).await.unwrap();
    publish_batch(&db.pool, "jobs", (1..=3).map(job)).await.unwrap();
    wait_until(WAIT, "three events handled", || async { handled.lock().unwrap().len() == 3 }).await;
    h.shutdown(Duration::from_secs(5)).await;

    // What a restore elsewhere looks like: the stored position is far ahead of
    // the server's transaction ids, and so are the events written there.
    sqlx::query(
        "UPDATE sluice.consumers SET position = (x::text || ':' || x::text || ':')::pg_snapshot
         FROM (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000 AS x) AS ahead",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE sluice.events SET txid = (txid::text::bigint + 1000000)::text::xid8")
        .execute(&db.pool)
        .await
        .unwrap();
    publish_batch(&db.pool, "jobs", (4..=5).map(job)).await.unwrap();

    let h = sub(&db.pool, subscription(), recorder(handled.clone())).await.unwrap();
    wait_until(WAIT, "the subscriber to stop on its own", || async { h.is_finished() }).await;
    let e = h.error().expect("the error that stopped it");
    assert!(
        matches!(e, sluice::Error::PositionAhead { stream, consumer } if stream == "jobs" && consumer == "c"),
        "{e:?}"
    );
    assert!(e.to_string().contains("reset_position"), "the error names the fix: {e}");
    assert_eq!(handled.lock().unwrap().len(), 3, "nothing was handled, nothing skipped");
    h.shutdown(Duration::from_secs(5)).await;

    // Replay from the beginning: the completed events come again, then the new ones.
    sluice::reset_position(&db.pool, "jobs", "c", sluice::Replay::Beginning).await.unwrap();
    let h = sub(&db.pool, subscription(), recorder(handled.clone())).await.unwrap();
    wait_until(WAIT, "the replay", || async { handled.lock().unwrap().len() == 8 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let mut replayed = handled.lock().unwrap()[3..].to_vec();
    replayed.sort();
    assert_eq!(replayed, [1, 2, 3, 4, 5]);
}

/// Replay to the beginning, an event, a time and now; pending tasks are kept, not duplicated.
#[tokio::test]
async fn reset_position_replays_from_the_beginning_an_event_a_time_or_now() {
    let db = TestDb::new().await;
    setup(&db, fast().completed_retention(Duration::from_secs(3600))).await;
    let handled: Arc<Mutex<Vec<i64>>> = Arc::default();
    let hh = handled.clone();
    let h = sub(&db.pool, subscription(), move |msg: Message<Value>| {
        let handled = hh.clone();
        async move {
            if n_of(&msg) == 6 {
                // Stays pending across the replays.
                msg.defer(Defer::by(Duration::from_secs(3600))).await?;
                return Ok(());
            }
            handled.lock().unwrap().push(n_of(&msg));
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    let ids = publish_batch(&db.pool, "jobs", (1..=4).map(job)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_batch(&db.pool, "jobs", (5..=6).map(job)).await.unwrap();
    wait_until(WAIT, "five handled", || async { handled.lock().unwrap().len() == 5 }).await;

    let replay = |to: sluice::Replay, expect: Vec<i64>| {
        let (pool, handled) = (db.pool.clone(), handled.clone());
        async move {
            // A replay brings back completed tasks only: wait until every ack
            // of the last round is written (the subscriber flushes them in
            // batches, after the handlers return).
            wait_until(WAIT, "the acks written", || async {
                task_states(&pool, "c").await == [("completed".to_string(), 5), ("scheduled".to_string(), 1)]
            })
            .await;
            handled.lock().unwrap().clear();
            sluice::reset_position(&pool, "jobs", "c", to).await.unwrap();
            let n = expect.len();
            wait_until(WAIT, "the replay", || async { handled.lock().unwrap().len() >= n }).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut got = handled.lock().unwrap().clone();
            got.sort();
            assert_eq!(got, expect, "replay to {to:?}");
        }
    };
    replay(sluice::Replay::Beginning, vec![1, 2, 3, 4, 5]).await;
    replay(sluice::Replay::Event(ids[2]), vec![3, 4, 5]).await;
    replay(sluice::Replay::At(middle), vec![5]).await;
    handled.lock().unwrap().clear();
    sluice::reset_position(&db.pool, "jobs", "c", sluice::Replay::Now).await.unwrap();
    publish(&db.pool, "jobs", job(7)).await.unwrap();
    wait_until(WAIT, "the new event", || async { !handled.lock().unwrap().is_empty() }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*handled.lock().unwrap(), [7], "nothing before now");
    h.shutdown(Duration::from_secs(5)).await;
    // The deferred task was never duplicated nor disturbed.
    let deferred: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.tasks WHERE state = 'scheduled'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(deferred, 1);

    let e = sluice::reset_position(&db.pool, "jobs", "nobody", sluice::Replay::Now).await.unwrap_err();
    assert!(matches!(e, sluice::Error::ConsumerNotFound { .. }), "{e:?}");
    let e = sluice::reset_position(&db.pool, "jobs", "c", sluice::Replay::Event(sluice::EventId(0))).await.unwrap_err();
    assert!(e.to_string().contains("event id 0"), "{e}");
}

/// Defect 9: a subscriber whose consumer is deleted stops with a typed error
/// instead of looping on warnings.
#[tokio::test]
async fn a_subscriber_whose_consumer_is_deleted_stops_with_a_typed_error() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let h = sub(&db.pool, subscription(), |_msg: Message<Value>| async { Ok::<_, HandlerError>(()) }).await.unwrap();
    sluice::delete_consumer(&db.pool, "jobs", "c").await.unwrap();
    publish(&db.pool, "jobs", job(1)).await.unwrap();
    wait_until(WAIT, "the subscriber to stop", || async { h.is_finished() }).await;
    assert!(matches!(h.error(), Some(sluice::Error::ConsumerNotFound { .. })), "{:?}", h.error());
    h.shutdown(Duration::from_secs(5)).await;
}

/// Defect 7: a hung handler fails its attempt after the handler timeout.
#[tokio::test]
async fn a_handler_past_its_timeout_fails_the_attempt_and_is_retried() {
    let db = TestDb::new().await;
    setup(&db, fast().completed_retention(Duration::from_secs(3600))).await;
    let h =
        sub(&db.pool, subscription().handler_timeout(Duration::from_millis(300)), |msg: Message<Value>| async move {
            if msg.attempt() == 1 {
                std::future::pending::<()>().await;
            }
            Ok::<_, HandlerError>(())
        })
        .await
        .unwrap();
    let id = publish(&db.pool, "jobs", job(1)).await.unwrap();
    wait_until(WAIT, "the second attempt to complete", || async {
        get_task(&db.pool, "jobs", "c", id).await.is_ok_and(|t| t.state == TaskState::Completed)
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    let task = get_task(&db.pool, "jobs", "c", id).await.unwrap();
    assert_eq!(task.attempt, 2);
    assert_eq!(task.errors[0]["error"], "handler timed out after 300ms");
}

/// Makes every ack fail: acks delete tasks, and this trigger refuses it.
async fn refuse_acks(db: &TestDb) {
    sqlx::raw_sql(
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'acks refused by the test'; END $$;
         CREATE TRIGGER refuse_acks BEFORE DELETE ON sluice.tasks FOR EACH ROW EXECUTE FUNCTION public.refuse();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
}

/// Defect 9: the acker retried a permanent error forever, and the subscriber
/// wedged while its leases stayed alive. Now a flush is tried a bounded
/// number of times, then its tasks are given up and come back.
#[tokio::test]
async fn acks_that_keep_failing_are_given_up_and_their_tasks_come_back() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    refuse_acks(&db).await;
    let handled = Arc::new(AtomicUsize::new(0));
    // Given-up tasks come back once their lease ended longer ago than a call may take.
    let subscription = subscription()
        .lease(Duration::from_secs(1))
        .heartbeat(Duration::from_millis(200))
        .db_timeout(Duration::from_secs(1));
    let h = counting(&db, subscription, &handled).await;
    let mut events = h.events();
    publish_batch(&db.pool, "jobs", (1..=20).map(job)).await.unwrap();
    let given_up = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(sluice::SubscriberEvent::AcksGivenUp { tasks }) = events.recv().await {
                return tasks;
            }
        }
    })
    .await
    .expect("the flush is given up");
    assert!(given_up > 0);
    sqlx::query("DROP TRIGGER refuse_acks ON sluice.tasks").execute(&db.pool).await.unwrap();
    // Given up, not lost: they come back to this live worker and complete.
    wait_until(WAIT, "every task completed", || async {
        support::task_states(&db.pool, "c").await.is_empty() && handled.load(Ordering::SeqCst) > 20
    })
    .await;
    assert!(!h.is_finished(), "the subscriber kept working");
    h.shutdown(Duration::from_secs(5)).await;
}

/// Defect 8: shutdown awaited without a time limit, and after the grace
/// period the acker was left running, retrying forever. Now every step is
/// within the deadline, and the report says what became of the tasks.
#[tokio::test]
async fn shutdown_returns_within_its_deadline_and_reports_every_task() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let h = sub(&db.pool, subscription().concurrency(4).batch_size(10), move |msg: Message<Value>| {
        let started = s2.clone();
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            if n_of(&msg) % 2 == 0 {
                // Outlives any deadline.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    publish_batch(&db.pool, "jobs", (1..=30).map(job)).await.unwrap();
    wait_until(WAIT, "handlers to start", || async { started.load(Ordering::SeqCst) >= 4 }).await;
    // From now on no ack can be written.
    refuse_acks(&db).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deadline = Duration::from_secs(2);
    let began = std::time::Instant::now();
    let report = h.shutdown(deadline).await;
    let took = began.elapsed();
    // The bound is the contract; the slack covers a loaded machine's scheduling.
    assert!(took < deadline + Duration::from_secs(1), "shutdown took {took:?} with a deadline of {deadline:?}");
    assert!(report.aborted >= 1, "the endless handlers were stopped and handed back: {report:?}");
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.workers").fetch_one(&db.pool).await.unwrap();
    assert_eq!(workers, 0, "the worker unregistered");
    // Every task is accounted for: running ones are only those abandoned.
    let running: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.tasks WHERE state = 'running'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(running as usize, report.abandoned, "{report:?}");
}

/// Defect 9: a dead worker holding more than one housekeeping batch of tasks
/// was forgotten after the first batch, and the rest waited out their lease.
#[tokio::test]
async fn a_dead_workers_tasks_all_come_back_however_many() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let consumer: i32 = sqlx::query_scalar("SELECT id FROM sluice.consumers").fetch_one(&db.pool).await.unwrap();
    publish_batch(&db.pool, "jobs", (1..=2_500).map(job)).await.unwrap();
    support::refill(&db.pool, consumer, 100000).await.unwrap();
    // A worker that died holding every task, each leased for an hour.
    let dead = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO sluice.workers (id, consumer_id, host, pid, heartbeat_at, dead_after)
         VALUES ($1, $2, 'gone', 1, now() - interval '1 minute', interval '1 second')",
    )
    .bind(dead)
    .bind(consumer)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE sluice.tasks SET state = 'running', attempt = 1, worker_id = $1,
                lease_until = now() + interval '1 hour', lease_token = nextval('sluice.lease_token')",
    )
    .bind(dead)
    .execute(&db.pool)
    .await
    .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = counting(&db, subscription().concurrency(64).batch_size(500), &handled).await;
    wait_until(WAIT, "all 2,500 tasks handled", || async { handled.load(Ordering::SeqCst) >= 2_500 }).await;
    h.shutdown(Duration::from_secs(5)).await;
}

/// Defect 9: a task whose event row is gone was claimed, never handed to a
/// handler, and burnt its attempts unseen. Now it is discarded, saying why.
#[tokio::test]
async fn a_task_whose_event_is_gone_is_discarded_with_a_reason() {
    let db = TestDb::new().await;
    setup(&db, fast().completed_retention(Duration::from_secs(3600))).await;
    let consumer: i32 = sqlx::query_scalar("SELECT id FROM sluice.consumers").fetch_one(&db.pool).await.unwrap();
    let ids = publish_batch(&db.pool, "jobs", (1..=3).map(job)).await.unwrap();
    support::refill(&db.pool, consumer, 100).await.unwrap();
    sqlx::query("DELETE FROM sluice.events WHERE id = $1").bind(ids[1].0).execute(&db.pool).await.unwrap();
    let handled: Arc<Mutex<Vec<i64>>> = Arc::default();
    let h2 = handled.clone();
    let h = sub(&db.pool, subscription(), move |msg: Message<Value>| {
        let handled = h2.clone();
        async move {
            handled.lock().unwrap().push(n_of(&msg));
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    wait_until(WAIT, "the orphan to be discarded", || async {
        sqlx::query_scalar::<_, String>("SELECT state::text FROM sluice.tasks WHERE event_id = $1")
            .bind(ids[1].0)
            .fetch_one(&db.pool)
            .await
            .unwrap()
            == "discarded"
    })
    .await;
    wait_until(WAIT, "the others handled", || async { handled.lock().unwrap().len() == 2 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let (attempt, error): (i32, String) =
        sqlx::query_as("SELECT attempt, errors -> 0 ->> 'error' FROM sluice.tasks WHERE event_id = $1")
            .bind(ids[1].0)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempt, 0, "no attempt was burnt");
    assert_eq!(error, format!("event {} no longer exists", ids[1].0));
}

/// Defect 9: the completed-task purge removed everything past retention in
/// one statement. Now each housekeeping run removes one bounded batch.
#[tokio::test]
async fn the_completed_task_purge_works_in_bounded_batches() {
    let db = TestDb::new().await;
    setup(&db, fast().completed_retention(Duration::from_secs(1))).await;
    let consumer: i32 = sqlx::query_scalar("SELECT id FROM sluice.consumers").fetch_one(&db.pool).await.unwrap();
    publish_batch(&db.pool, "jobs", (1..=2_500).map(job)).await.unwrap();
    support::refill(&db.pool, consumer, 100000).await.unwrap();
    sqlx::query("UPDATE sluice.tasks SET state = 'completed', finished_at = now() - interval '1 minute'")
        .execute(&db.pool)
        .await
        .unwrap();
    let h = sub(&db.pool, subscription(), |_msg: Message<Value>| async { Ok::<_, HandlerError>(()) }).await.unwrap();
    let mut events = h.events();
    let mut runs = Vec::new();
    tokio::time::timeout(WAIT, async {
        while runs.iter().sum::<u64>() < 2_500 {
            if let Ok(sluice::SubscriberEvent::Maintained { purged, .. }) = events.recv().await {
                if purged > 0 {
                    runs.push(purged);
                }
            }
        }
    })
    .await
    .expect("everything past retention purged");
    h.shutdown(Duration::from_secs(5)).await;
    assert!(runs.iter().all(|&n| n <= 1_000), "each run purges one batch at most: {runs:?}");
    assert!(support::task_states(&db.pool, "c").await.is_empty());
}

/// Defect 9: claimed payloads came back in one array datum, so a batch of
/// large payloads could exceed Postgres' 1 GB limit on every try. A claim is
/// bounded by bytes too, and always takes at least one task.
#[tokio::test]
async fn a_claim_is_bounded_by_payload_bytes() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let big = "x".repeat(64 * 1024);
    publish_batch(
        &db.pool,
        "jobs",
        (1..=6).map(|n| NewEvent::new("jobs.run", &json!({ "n": n, "pad": big })).unwrap()),
    )
    .await
    .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = counting(&db, subscription().batch_size(100).max_batch_bytes(1), &handled).await;
    let mut events = h.events();
    let mut claims = Vec::new();
    tokio::time::timeout(WAIT, async {
        while claims.iter().sum::<usize>() < 6 {
            if let Ok(sluice::SubscriberEvent::Fetched { claimed, .. }) = events.recv().await {
                if claimed > 0 {
                    claims.push(claimed);
                }
            }
        }
    })
    .await
    .expect("all six claimed");
    wait_until(WAIT, "all six handled", || async { handled.load(Ordering::SeqCst) == 6 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(claims, [1, 1, 1, 1, 1, 1], "one task per claim under a 1-byte budget");
}

/// Review finding: a reset to "now" skipped the events of transactions
/// still open at the reset. "Now" is the snapshot alone, as for a consumer
/// created at now: such events come when their transaction commits.
#[tokio::test]
async fn a_reset_to_now_keeps_the_events_of_transactions_still_open() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let handled: Arc<Mutex<Vec<i64>>> = Arc::default();
    let hh = handled.clone();
    let h = sub(&db.pool, subscription(), move |msg: Message<Value>| {
        let handled = hh.clone();
        async move {
            handled.lock().unwrap().push(n_of(&msg));
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    publish(&db.pool, "jobs", job(1)).await.unwrap();
    wait_until(WAIT, "the first event", || async { handled.lock().unwrap().len() == 1 }).await;
    let mut open = db.pool.begin().await.unwrap();
    publish(&mut *open, "jobs", job(2)).await.unwrap();
    sluice::reset_position(&db.pool, "jobs", "c", sluice::Replay::Now).await.unwrap();
    open.commit().await.unwrap();
    wait_until(WAIT, "the event of the transaction open at the reset", || async {
        handled.lock().unwrap().contains(&2)
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*handled.lock().unwrap(), [1, 2]);
}

/// The ack reads each task under the statement's snapshot and then deletes
/// it; a task rescued and claimed again by another worker in between has
/// the same state, running, but a new lease token. The ack waits for the
/// new holder's lock, finds the new token on the row's newest version and
/// leaves it: the stale ack reports the lease lost, the live attempt stays.
#[tokio::test]
async fn an_ack_racing_a_rescue_and_a_new_claim_leaves_the_new_holders_task() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    publish(&db.pool, "jobs", job(1)).await.unwrap();
    let (consumer, event, stale): (i32, i64, i64) = sqlx::query_as(
        "INSERT INTO sluice.tasks (consumer_id, event_id, event_txid, state, priority, position, attempt,
                                   worker_id, lease_until)
         SELECT c.id, e.id, e.txid, 'running', 1, e.id, 1, gen_random_uuid(), now() + interval '1 minute'
         FROM sluice.events e, sluice.consumers c WHERE c.name = 'c'
         RETURNING consumer_id, event_id, lease_token",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();

    // The rescuer hands the task back, and holds the row until its
    // transaction ends.
    let mut rescuer = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut rescuer).await.unwrap();
    sqlx::query(
        "UPDATE sluice.tasks SET state = 'available', worker_id = NULL, lease_until = NULL
         WHERE consumer_id = $1 AND event_id = $2",
    )
    .bind(consumer)
    .bind(event)
    .execute(&mut rescuer)
    .await
    .unwrap();

    // The stale holder acks: it finds its task (the rescue is not committed)
    // and waits for the row.
    let mut holder = PgConnection::connect(&db.url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut holder).await.unwrap();
    let ack = tokio::spawn(async move {
        let acked: Vec<i64> = sqlx::query_scalar(include_str!("../crates/sluice/src/sql/ack.sql"))
            .bind(consumer)
            .bind(vec![event])
            .bind(vec![stale])
            .fetch_all(&mut holder)
            .await
            .unwrap();
        acked
    });
    wait_until(WAIT, "the ack waiting for the rescuer's lock", || {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')",
            )
            .bind(pid)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    })
    .await;

    // Another worker claims the task again, in the same transaction, and commits.
    let fresh: i64 = sqlx::query_scalar(
        "UPDATE sluice.tasks SET state = 'running', attempt = attempt + 1, worker_id = gen_random_uuid(),
                                 lease_until = now() + interval '1 minute', lease_token = nextval('sluice.lease_token')
         WHERE consumer_id = $1 AND event_id = $2 RETURNING lease_token",
    )
    .bind(consumer)
    .bind(event)
    .fetch_one(&mut rescuer)
    .await
    .unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut rescuer).await.unwrap();

    assert_eq!(ack.await.unwrap(), Vec::<i64>::new(), "the stale ack completed the task");
    let task = get_task(&db.pool, "jobs", "c", sluice::EventId(event)).await.expect("the task is gone");
    assert_eq!((task.state, task.attempt), (TaskState::Running, 2));
    let token: i64 = sqlx::query_scalar("SELECT lease_token FROM sluice.tasks WHERE event_id = $1")
        .bind(event)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(token, fresh);
}

/// Two refills of one consumer at once (issue 11): the second took the
/// consumer's row with SKIP LOCKED, came back empty and busy, and its
/// subscriber looked again 5 ms later, so whoever asked right after a commit
/// won and more worker processes drained slower. Now it waits for the first
/// and refills for itself in the same round trip.
#[tokio::test]
async fn a_refill_during_another_waits_for_it_and_gets_work_in_the_same_round_trip() {
    let db = TestDb::new().await;
    setup(&db, fast().start(sluice::Start::Beginning)).await;
    publish_batch(&db.pool, "jobs", (0..300).map(job)).await.unwrap();
    let consumer: i32 =
        sqlx::query_scalar("SELECT id FROM sluice.consumers WHERE name = 'c'").fetch_one(&db.direct).await.unwrap();
    const FETCH: &str = "SELECT count(event_id) FROM sluice.fetch_v2($1, gen_random_uuid(), interval '1 minute', 100,
                                                                 10000, true, 1000000)";

    // The first refill, in a transaction left open: it holds the consumer's row.
    let mut first = PgConnection::connect_with(&db.options().await).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut first).await.unwrap();
    let claimed: i64 = sqlx::query_scalar(FETCH).bind(consumer).fetch_one(&mut first).await.unwrap();
    assert_eq!(claimed, 100);

    let second = tokio::spawn({
        let pool = db.direct.clone();
        async move { sqlx::query_scalar::<_, i64>(FETCH).bind(consumer).fetch_one(&pool).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "the second refill did not wait for the first");
    sqlx::raw_sql("COMMIT").execute(&mut first).await.unwrap();

    let claimed = second.await.unwrap().unwrap();
    assert_eq!(claimed, 100, "the second refill came back without work");
    let running: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.tasks WHERE state = 'running'")
        .fetch_one(&db.direct)
        .await
        .unwrap();
    let workers: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT worker_id) FROM sluice.tasks").fetch_one(&db.direct).await.unwrap();
    assert_eq!((running, workers), (200, 2), "each refill leased its own hundred tasks");
}

/// The wait is bounded: when something other than a refill holds the
/// consumer's row (an operator's open transaction), the refill gives up
/// after its lock_timeout, the subscriber tries again, and carries on once
/// the row is free.
#[tokio::test]
async fn a_subscriber_waits_out_a_consumer_row_held_by_an_open_transaction() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = counting(&db, subscription(), &calls).await;
    publish(&db.pool, "jobs", job(0)).await.unwrap();
    wait_until(WAIT, "the first event is handled", || async { calls.load(Ordering::SeqCst) == 1 }).await;

    let mut operator = PgConnection::connect_with(&db.options().await).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT * FROM sluice.consumers WHERE name = 'c' FOR UPDATE")
        .execute(&mut operator)
        .await
        .unwrap();
    publish_batch(&db.pool, "jobs", (1..=20).map(job)).await.unwrap();
    // Longer than the refill's lock_timeout (2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a refill ran while the consumer's row was held");
    assert!(!handle.is_finished(), "the subscriber stopped: {:?}", handle.error());
    sqlx::raw_sql("COMMIT").execute(&mut operator).await.unwrap();

    wait_until(WAIT, "every event is handled once the row is free", || async { calls.load(Ordering::SeqCst) == 21 })
        .await;
    handle.shutdown(Duration::from_secs(5)).await;
}

/// A claim whose answer never reached the worker (the fetch timed out or
/// lost its connection after the claim committed): the task runs under the
/// live worker's name without the worker knowing. Its heartbeat hands it
/// back once the lease has passed, with the attempt given back, since no
/// handler started: with `max_attempts` 1 it still runs once, and is no
/// dead letter.
#[tokio::test]
async fn a_claim_whose_answer_was_lost_comes_back_with_its_attempt() {
    let db = TestDb::new().await;
    setup(&db, fast().max_attempts(1)).await;
    sluice::pause_consumer(&db.pool, "jobs", "c").await.unwrap();
    let id = publish(&db.pool, "jobs", job(1)).await.unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let h = {
        let attempts = attempts.clone();
        sub(&db.pool, subscription().heartbeat(Duration::from_millis(200)), move |msg: Message<Value>| {
            let attempts = attempts.clone();
            async move {
                attempts.lock().unwrap().push(msg.attempt());
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap()
    };
    // The paused consumer's refill makes the task; then a claim in the
    // worker's name whose answer is lost: the worker holds no such token.
    wait_until(WAIT, "the task made", || async { task_states(&db.pool, "c").await.len() == 1 }).await;
    sqlx::query(
        "UPDATE sluice.tasks SET state = 'running', attempt = attempt + 1, worker_id = $1,
                lease_until = now() - interval '1 minute', lease_token = nextval('sluice.lease_token')
         WHERE event_id = $2",
    )
    .bind(h.worker_id().0)
    .bind(id.0)
    .execute(&db.pool)
    .await
    .unwrap();
    sluice::resume_consumer(&db.pool, "jobs", "c").await.unwrap();
    wait_until(WAIT, "the task handled", || async { !attempts.lock().unwrap().is_empty() }).await;
    wait_until(WAIT, "the task acked", || async { task_states(&db.pool, "c").await.is_empty() }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*attempts.lock().unwrap(), vec![1], "the lost claim's attempt was given back");
    let log: Vec<(String, i32)> =
        sqlx::query_as("SELECT action::text, attempt FROM sluice.task_log WHERE event_id = $1 ORDER BY id")
            .bind(id.0)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(log, vec![("released".to_string(), 0)], "logged as handed back, its attempt given back");
}
