//! FIFO per key (`ConsumerOptions::ordered_by_key`): one task of a key at a
//! time, in event order; keyless events and other keys never wait; dead
//! letters let the key go, or hold it; changing the setting is refused while
//! tasks are pending. The many-subscribers, many-processes proof is
//! tests/fifo.rs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice::{
    cancel_task, create_consumer, create_stream, get_consumer, get_task, pause_consumer, publish, publish_batch,
    retry_task, sub, update_consumer, ConsumerOptions, Defer, Error, EventId, HandlerError, Message, NewEvent,
    Priority, StreamOptions, Subscription, TaskState,
};
use support::{wait_until, TestDb};
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(30);

async fn setup(db: &TestDb, options: ConsumerOptions) {
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(
        &db.pool,
        "jobs",
        "c",
        options.backoff(Duration::from_millis(10), Duration::from_millis(50)).max_attempts(2),
    )
    .await
    .unwrap();
}

fn event(n: i64, key: Option<&str>) -> NewEvent {
    let e = NewEvent::new("jobs.run", &json!({ "n": n })).unwrap();
    match key {
        Some(k) => e.key(k),
        None => e,
    }
}

fn subscription() -> Subscription {
    Subscription::new("jobs", "c").concurrency(8).poll_interval(Duration::from_millis(50))
}

/// The task's state; `None` before it is made, or once acked (deleted).
async fn state_of(db: &TestDb, id: EventId) -> Option<TaskState> {
    match get_task(&db.pool, "jobs", "c", id).await {
        Ok(task) => Some(task.state),
        Err(Error::TaskNotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

type Log = Arc<Mutex<Vec<i64>>>;

/// While a key's task runs, its later tasks wait (state `waiting`), and
/// events of other keys and without a key are handled meanwhile; once it is
/// done the next one of the key runs.
#[tokio::test]
async fn a_keys_later_tasks_wait_while_other_keys_and_keyless_events_flow() {
    let db = TestDb::new().await;
    setup(&db, ConsumerOptions::default().ordered_by_key().completed_retention(Duration::from_secs(60))).await;
    let ids = publish_batch(
        &db.pool,
        "jobs",
        [event(1, Some("a")), event(2, Some("a")), event(3, None), event(4, Some("b")), event(5, Some("a"))],
    )
    .await
    .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let seen: Log = Arc::default();
    let handler = {
        let (gate, seen) = (gate.clone(), seen.clone());
        move |msg: Message<Value>| {
            let (gate, seen) = (gate.clone(), seen.clone());
            async move {
                let n = msg.payload()["n"].as_i64().unwrap();
                if n == 1 {
                    gate.acquire().await.unwrap().forget();
                }
                seen.lock().unwrap().push(n);
                Ok::<_, HandlerError>(())
            }
        }
    };
    let h = sub(&db.pool, subscription(), handler).await.unwrap();
    wait_until(WAIT, "the keyless event and key b handled", || async {
        let seen = seen.lock().unwrap();
        seen.contains(&3) && seen.contains(&4)
    })
    .await;
    // Key a: its first task runs (held by the gate), the other two wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&db, ids[0]).await, Some(TaskState::Running));
    assert_eq!(state_of(&db, ids[1]).await, Some(TaskState::Waiting));
    assert_eq!(state_of(&db, ids[4]).await, Some(TaskState::Waiting));
    let stats = sluice::queue_stats(&db.pool, Some("jobs"), Some("c")).await.unwrap();
    assert_eq!(stats.consumers[0].waiting, 2, "stats count waiting tasks");
    assert_eq!(*seen.lock().unwrap(), vec![3, 4]);

    gate.add_permits(1);
    wait_until(WAIT, "every event handled", || async { seen.lock().unwrap().len() == 5 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let seen = seen.lock().unwrap().clone();
    let a: Vec<i64> = seen.iter().copied().filter(|n| [1, 2, 5].contains(n)).collect();
    assert_eq!(a, vec![1, 2, 5], "key a in event order: {seen:?}");
}

/// A retry and a deferral hold the key: its next task waits for them. A
/// higher priority never jumps ahead within a key.
#[tokio::test]
async fn a_retry_or_a_deferral_holds_the_key_and_priority_does_not_reorder_it() {
    let db = TestDb::new().await;
    setup(&db, ConsumerOptions::default().ordered_by_key()).await;
    let urgent = |n: i64| event(n, Some("k")).priority(Priority::new(5).unwrap());
    publish_batch(&db.pool, "jobs", [event(1, Some("k")), event(2, Some("k")), urgent(3), event(4, Some("k"))])
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<(i64, i32)>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |msg: Message<Value>| {
            let seen = seen.clone();
            async move {
                let n = msg.payload()["n"].as_i64().unwrap();
                seen.lock().unwrap().push((n, msg.attempt()));
                match (n, msg.attempt()) {
                    (1, 1) => Err(HandlerError::new("not yet")),
                    (2, 1) => {
                        msg.defer(Defer::by(Duration::from_millis(200))).await?;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        }
    };
    let h = sub(&db.pool, subscription(), handler).await.unwrap();
    wait_until(WAIT, "every event handled", || async { seen.lock().unwrap().len() == 6 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*seen.lock().unwrap(), vec![(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (4, 1)]);
}

/// By default a dead letter lets its key's next task go; with
/// `hold_key_on_dead_letter` the key waits until the dead letter is retried
/// (then it runs first) or cancelled.
#[tokio::test]
async fn a_dead_letter_lets_the_key_go_or_holds_it_until_retried_or_cancelled() {
    for hold in [false, true] {
        let db = TestDb::new().await;
        let options = ConsumerOptions::default();
        setup(&db, if hold { options.hold_key_on_dead_letter() } else { options.ordered_by_key() }).await;
        let ids = publish_batch(&db.pool, "jobs", (1..=3).map(|n| event(n, Some("k")))).await.unwrap();
        let seen: Log = Arc::default();
        // Event 1 fails (twice: a dead letter) until fixed.
        let fixed = Arc::new(AtomicBool::new(false));
        let handler = {
            let (seen, fixed) = (seen.clone(), fixed.clone());
            move |msg: Message<Value>| {
                let (seen, fixed) = (seen.clone(), fixed.clone());
                async move {
                    let n = msg.payload()["n"].as_i64().unwrap();
                    seen.lock().unwrap().push(n);
                    if n == 1 && !fixed.load(Ordering::SeqCst) {
                        return Err(HandlerError::new("broken"));
                    }
                    Ok::<_, HandlerError>(())
                }
            }
        };
        let h = sub(&db.pool, subscription(), handler).await.unwrap();
        wait_until(WAIT, "the first a dead letter", || async {
            state_of(&db, ids[0]).await == Some(TaskState::Discarded)
        })
        .await;
        if !hold {
            wait_until(WAIT, "the rest handled", || async { seen.lock().unwrap().len() == 4 }).await;
            assert_eq!(*seen.lock().unwrap(), vec![1, 1, 2, 3]);
            h.shutdown(Duration::from_secs(5)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(*seen.lock().unwrap(), vec![1, 1], "held by the dead letter");
        assert_eq!(state_of(&db, ids[1]).await, Some(TaskState::Waiting));
        // Retried, it runs first (attempts reset), then the rest in order.
        fixed.store(true, Ordering::SeqCst);
        retry_task(&db.pool, "jobs", "c", ids[0], Some("fixed")).await.unwrap();
        wait_until(WAIT, "the rest handled", || async { seen.lock().unwrap().len() == 5 }).await;
        assert_eq!(*seen.lock().unwrap(), vec![1, 1, 1, 2, 3]);

        // Cancelling a dead letter lets the key go too.
        fixed.store(false, Ordering::SeqCst);
        let more = publish_batch(&db.pool, "jobs", [event(1, Some("k")), event(9, Some("k"))]).await.unwrap();
        wait_until(WAIT, "the new first a dead letter", || async {
            state_of(&db, more[0]).await == Some(TaskState::Discarded)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(state_of(&db, more[1]).await, Some(TaskState::Waiting));
        cancel_task(&db.pool, "jobs", "c", more[0], Some("not needed")).await.unwrap();
        wait_until(WAIT, "the next one handled", || async { seen.lock().unwrap().contains(&9) }).await;
        assert_eq!(state_of(&db, more[0]).await, Some(TaskState::Cancelled));
        h.shutdown(Duration::from_secs(5)).await;
    }
}

/// An ack inside an open transaction holds up only its own key: the
/// refill never waits for it, other keys run, and the key's next task runs
/// once it commits.
#[tokio::test]
async fn an_open_transactional_ack_holds_up_only_its_own_key() {
    let db = TestDb::new().await;
    setup(&db, ConsumerOptions::default().ordered_by_key()).await;
    publish_batch(&db.pool, "jobs", [event(1, Some("a")), event(2, Some("a"))]).await.unwrap();
    let commit = Arc::new(Semaphore::new(0));
    let seen: Log = Arc::default();
    let handler = {
        let (pool, commit, seen) = (db.pool.clone(), commit.clone(), seen.clone());
        move |msg: Message<Value>| {
            let (pool, commit, seen) = (pool.clone(), commit.clone(), seen.clone());
            async move {
                let n = msg.payload()["n"].as_i64().unwrap();
                seen.lock().unwrap().push(n);
                if n == 1 {
                    let mut tx = pool.begin().await?;
                    msg.ack_tx(&mut *tx).await?;
                    commit.acquire().await.unwrap().forget();
                    tx.commit().await?;
                }
                Ok::<_, HandlerError>(())
            }
        }
    };
    let h = sub(&db.pool, subscription(), handler).await.unwrap();
    wait_until(WAIT, "the first taken", || async { seen.lock().unwrap().contains(&1) }).await;
    let others = publish_batch(&db.pool, "jobs", (10..15).map(|n| event(n, Some("b")))).await.unwrap();
    publish(&db.pool, "jobs", event(20, None)).await.unwrap();
    wait_until(WAIT, "key b and the keyless event handled", || async { seen.lock().unwrap().len() == 7 }).await;
    assert!(!seen.lock().unwrap().contains(&2), "key a waits for the open transaction");
    // (Its handler has run; its implicit ack is flushed a moment later.)
    wait_until(WAIT, "key b's last one acked (deleted)", || async {
        get_task(&db.pool, "jobs", "c", others[4]).await.is_err()
    })
    .await;
    assert!(!seen.lock().unwrap().contains(&2), "key a waits for the open transaction");
    commit.add_permits(1);
    wait_until(WAIT, "key a's next one handled", || async { seen.lock().unwrap().contains(&2) }).await;
    h.shutdown(Duration::from_secs(5)).await;
}

/// The setting changes only while the consumer is paused with nothing
/// pending; otherwise a typed error, and nothing changes.
#[tokio::test]
async fn the_ordering_changes_only_on_a_paused_drained_consumer() {
    let db = TestDb::new().await;
    setup(&db, ConsumerOptions::default()).await;
    let existing = get_consumer(&db.pool, "jobs", "c").await.unwrap();
    assert!(!existing.ordered_by_key);
    let ordered = ConsumerOptions::from(&existing).ordered_by_key();

    let err = update_consumer(&db.pool, "jobs", "c", ordered.clone()).await.unwrap_err();
    assert!(matches!(&err, Error::OrderingInUse { reason, .. } if reason.contains("not paused")), "{err}");
    pause_consumer(&db.pool, "jobs", "c").await.unwrap();
    publish(&db.pool, "jobs", event(1, Some("a"))).await.unwrap();
    // A refill makes the event a task (paused consumers still materialize).
    let h = sub(&db.pool, subscription(), |_msg: Message<Value>| async { Ok::<_, HandlerError>(()) }).await.unwrap();
    wait_until(WAIT, "the task made", || async { support::task_states(&db.pool, "c").await.len() == 1 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let err = update_consumer(&db.pool, "jobs", "c", ordered.clone()).await.unwrap_err();
    assert!(matches!(&err, Error::OrderingInUse { reason, .. } if reason == "1 of its tasks are pending"), "{err}");
    assert!(err.to_string().contains("pause it and let its pending tasks finish"), "{err}");
    assert!(!get_consumer(&db.pool, "jobs", "c").await.unwrap().ordered_by_key, "nothing changed");

    sluice::cancel_tasks(&db.pool, "jobs", "c", &sluice::TaskFilter::default(), None).await.unwrap();
    let changed = update_consumer(&db.pool, "jobs", "c", ordered).await.unwrap();
    assert!(changed.ordered_by_key && !changed.hold_key_on_dead_letter);
    // Creating it again with other ordering is a conflict naming the setting.
    let err = create_consumer(&db.pool, "jobs", "c", ConsumerOptions::from(&changed).unordered()).await.unwrap_err();
    assert!(err.to_string().contains("ordered_by_key"), "{err}");
}

/// Fan-out: an unordered consumer of the same stream gets the same keyed
/// events without waiting for the ordered one.
#[tokio::test]
async fn an_unordered_consumer_of_the_same_stream_does_not_wait_for_the_ordered_one() {
    let db = TestDb::new().await;
    setup(&db, ConsumerOptions::default().ordered_by_key()).await;
    create_consumer(&db.pool, "jobs", "d", ConsumerOptions::default()).await.unwrap();
    let ids = publish_batch(&db.pool, "jobs", [event(1, Some("a")), event(2, Some("a"))]).await.unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let held = {
        let gate = gate.clone();
        move |_msg: Message<Value>| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, HandlerError>(())
            }
        }
    };
    let c = sub(&db.pool, subscription(), held).await.unwrap();
    wait_until(WAIT, "the ordered consumer's second task waiting", || async {
        state_of(&db, ids[1]).await == Some(TaskState::Waiting)
    })
    .await;
    let seen: Log = Arc::default();
    let d = support::record_n(&db.pool, Subscription::new("jobs", "d").poll_interval(Duration::from_millis(50)), &seen)
        .await;
    wait_until(WAIT, "both handled by the unordered consumer", || async { seen.lock().unwrap().len() == 2 }).await;
    assert_eq!(state_of(&db, ids[1]).await, Some(TaskState::Waiting), "the ordered one still waits");
    gate.add_permits(2);
    wait_until(WAIT, "the ordered consumer done", || async { support::task_states(&db.pool, "c").await.is_empty() })
        .await;
    c.shutdown(Duration::from_secs(5)).await;
    d.shutdown(Duration::from_secs(5)).await;
}

/// How a consumer meets the events of an outbox-style publish.
#[derive(Debug, Clone, Copy)]
enum Meets {
    /// Its subscriber runs while they are published.
    Live,
    /// It is paused while they are published and refilled, then resumed.
    Paused,
    /// Its subscriber starts after they are all published and reads the
    /// window one event per refill (a backlog larger than a chunk).
    Lagging,
}

/// The outbox pattern (docs/RELIABILITY.md): a business transaction writes
/// its own row first, then publishes at its end. Meanwhile another event of
/// the same key is published and committed. The business transaction has the
/// smaller transaction id but publishes later, so its event has the larger
/// id: the key runs in event id order, the order of publishing, whether the
/// consumer is live, paused or lagging.
#[tokio::test]
async fn a_key_runs_in_publishing_order_under_the_outbox_pattern() {
    for meets in [Meets::Live, Meets::Paused, Meets::Lagging] {
        let db = TestDb::new().await;
        setup(&db, ConsumerOptions::default().ordered_by_key()).await;
        sqlx::query("CREATE TABLE business (id bigint)").execute(&db.pool).await.unwrap();
        let seen: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
        let handler = {
            let seen = seen.clone();
            move |msg: Message<Value>| {
                let seen = seen.clone();
                async move {
                    let key = msg.key().unwrap_or_default().to_string();
                    seen.lock().unwrap().push((key, msg.payload()["n"].as_i64().unwrap()));
                    Ok::<_, HandlerError>(())
                }
            }
        };
        let subscription = match meets {
            Meets::Lagging => subscription().refill_chunk(1),
            _ => subscription(),
        };
        let mut h = match meets {
            Meets::Live | Meets::Paused => Some(sub(&db.pool, subscription.clone(), handler.clone()).await.unwrap()),
            Meets::Lagging => None,
        };
        if let Meets::Paused = meets {
            pause_consumer(&db.pool, "jobs", "c").await.unwrap();
        }
        let keys = ["k1", "k2", "k3", "k4"];
        for key in keys {
            let mut business = db.pool.begin().await.unwrap();
            sqlx::query("INSERT INTO business VALUES (1)").execute(&mut *business).await.unwrap();
            publish(&db.pool, "jobs", event(1, Some(key))).await.unwrap();
            if let Meets::Live = meets {
                // The live subscriber takes the first event before the second exists.
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            publish(&mut *business, "jobs", event(2, Some(key))).await.unwrap();
            business.commit().await.unwrap();
        }
        match meets {
            Meets::Paused => {
                wait_until(WAIT, "every event made a task", || async {
                    support::task_states(&db.pool, "c").await.iter().map(|(_, n)| n).sum::<i64>() == 8
                })
                .await;
                sluice::resume_consumer(&db.pool, "jobs", "c").await.unwrap();
            }
            Meets::Lagging => h = Some(sub(&db.pool, subscription, handler).await.unwrap()),
            Meets::Live => {}
        }
        wait_until(WAIT, "every event handled", || async { seen.lock().unwrap().len() == 8 }).await;
        h.unwrap().shutdown(Duration::from_secs(5)).await;
        let seen = seen.lock().unwrap().clone();
        for key in keys {
            let order: Vec<i64> = seen.iter().filter(|(k, _)| k == key).map(|(_, n)| *n).collect();
            assert_eq!(order, vec![1, 2], "{meets:?}: key {key} out of publishing order: {seen:?}");
        }
    }
}

/// A dead letter of the time before ordering was turned on has no key on
/// its task; retried after `set-order --ordered`, it takes its key from its
/// event and waits for the key's running task instead of running beside it.
#[tokio::test]
async fn a_dead_letter_retried_after_ordering_is_turned_on_waits_its_turn() {
    let db = TestDb::new().await;
    setup(&db, ConsumerOptions::default().max_attempts(1)).await;
    let first = publish(&db.pool, "jobs", event(1, Some("k"))).await.unwrap();
    let fail = |_msg: Message<Value>| async { Err::<(), _>(HandlerError::new("broken")) };
    let h = sub(&db.pool, subscription(), fail).await.unwrap();
    wait_until(WAIT, "a dead letter", || async { state_of(&db, first).await == Some(TaskState::Discarded) }).await;
    h.shutdown(Duration::from_secs(5)).await;

    pause_consumer(&db.pool, "jobs", "c").await.unwrap();
    let existing = get_consumer(&db.pool, "jobs", "c").await.unwrap();
    update_consumer(&db.pool, "jobs", "c", ConsumerOptions::from(&existing).ordered_by_key()).await.unwrap();
    sluice::resume_consumer(&db.pool, "jobs", "c").await.unwrap();

    // The key's next event runs and is held there; the old dead letter is retried meanwhile.
    let gate = Arc::new(Semaphore::new(0));
    let running = Arc::new(Mutex::new(Vec::<i64>::new()));
    let overlap = Arc::new(AtomicBool::new(false));
    let handler = {
        let (gate, running, overlap) = (gate.clone(), running.clone(), overlap.clone());
        move |msg: Message<Value>| {
            let (gate, running, overlap) = (gate.clone(), running.clone(), overlap.clone());
            async move {
                let n = msg.payload()["n"].as_i64().unwrap();
                {
                    let mut running = running.lock().unwrap();
                    if !running.is_empty() {
                        overlap.store(true, Ordering::SeqCst);
                    }
                    running.push(n);
                }
                if n == 2 {
                    gate.acquire().await.unwrap().forget();
                }
                running.lock().unwrap().retain(|m| *m != n);
                Ok::<_, HandlerError>(())
            }
        }
    };
    let second = publish(&db.pool, "jobs", event(2, Some("k"))).await.unwrap();
    let h = sub(&db.pool, subscription(), handler).await.unwrap();
    wait_until(WAIT, "the key's next task running", || async {
        state_of(&db, second).await == Some(TaskState::Running)
    })
    .await;
    retry_task(&db.pool, "jobs", "c", first, Some("fixed")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state_of(&db, first).await, Some(TaskState::Waiting), "the retried task waits for its key");
    assert!(!overlap.load(Ordering::SeqCst), "two tasks of one key ran at once");
    gate.add_permits(1);
    wait_until(WAIT, "the retried task handled", || async { state_of(&db, first).await.is_none() }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert!(!overlap.load(Ordering::SeqCst), "two tasks of one key ran at once");
}

/// Consumer c's settings with its ordering by key turned the other way.
async fn flipped_ordering(db: &TestDb) -> ConsumerOptions {
    let existing = get_consumer(&db.pool, "jobs", "c").await.unwrap();
    if existing.ordered_by_key {
        ConsumerOptions::from(&existing).unordered()
    } else {
        ConsumerOptions::from(&existing).ordered_by_key()
    }
}

/// Turning the ordering on and off while an operator retries, cancels and
/// dead-letters the consumer's keyed tasks: one lock order (the consumer's
/// row before its tasks), so each either goes first or is refused, and no
/// deadlock (40P01) is ever reported.
#[tokio::test]
async fn changing_the_ordering_never_deadlocks_with_hand_steering() {
    let db = TestDb::new().await;
    setup(&db, ConsumerOptions::default().ordered_by_key().max_attempts(1)).await;
    publish_batch(&db.pool, "jobs", (0..40).map(|n| event(n, Some(&format!("k{}", n % 8))))).await.unwrap();
    let fail = |_msg: Message<Value>| async { Err::<(), _>(HandlerError::new("broken")) };
    let h = sub(&db.pool, subscription(), fail).await.unwrap();
    wait_until(WAIT, "every task a dead letter", || async {
        support::task_states(&db.pool, "c").await == vec![("discarded".to_string(), 40)]
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    pause_consumer(&db.pool, "jobs", "c").await.unwrap();

    let all = sluice::TaskFilter::default();
    let dead = sluice::TaskFilter::default().state(TaskState::Discarded);
    for round in 0..60 {
        let flipped = flipped_ordering(&db).await;
        let steer = async {
            match round % 3 {
                0 => sluice::retry_tasks(&db.pool, "jobs", "c", &all, None).await.map(|_| ()),
                1 => sluice::cancel_tasks(&db.pool, "jobs", "c", &dead, None).await.map(|_| ()),
                _ => sluice::discard_tasks(&db.pool, "jobs", "c", &all, None).await.map(|_| ()),
            }
        };
        let (changed, steered) = tokio::join!(update_consumer(&db.pool, "jobs", "c", flipped), steer);
        for result in [changed.map(|_| ()), steered] {
            if let Err(e) = result {
                assert!(matches!(e, Error::OrderingInUse { .. }), "round {round}: {e}");
            }
        }
        // Back to dead letters for the next round.
        if round % 3 == 1 {
            sluice::retry_tasks(&db.pool, "jobs", "c", &all, None).await.unwrap();
        }
        sluice::discard_tasks(&db.pool, "jobs", "c", &all, None).await.unwrap();
    }
}

/// The same with housekeeping purging keyed dead letters past their
/// retention (`sluice cleanup`, or any subscriber's maintenance): the purge
/// skips a consumer whose ordering is being changed instead of deadlocking.
#[tokio::test]
async fn changing_the_ordering_never_deadlocks_with_the_dead_letter_purge() {
    let db = TestDb::new().await;
    setup(&db, ConsumerOptions::default().ordered_by_key().dead_retention(Duration::from_secs(1))).await;
    publish_batch(&db.pool, "jobs", (0..40).map(|n| event(n, Some(&format!("k{}", n % 8))))).await.unwrap();
    pause_consumer(&db.pool, "jobs", "c").await.unwrap();
    let consumer: i32 = sqlx::query_scalar("SELECT id FROM sluice.consumers").fetch_one(&db.pool).await.unwrap();
    for round in 0..60 {
        // Keyed dead letters past their retention, as a failing handler
        // leaves them (written directly: 60 rounds of real failures would
        // take minutes).
        sqlx::query(
            "INSERT INTO sluice.tasks (consumer_id, event_id, event_txid, state, priority, position, attempt,
                                       lease_token, key, finished_at)
             SELECT $1, e.id, e.txid, 'discarded', 1, e.id, 1, nextval('sluice.lease_token'), e.key,
                    now() - interval '1 hour'
             FROM sluice.events e
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .execute(&db.pool)
        .await
        .unwrap();
        let flipped = flipped_ordering(&db).await;
        let (changed, cleaned) =
            tokio::join!(update_consumer(&db.pool, "jobs", "c", flipped), sluice::cleanup(&db.pool, false));
        if let Err(e) = changed {
            panic!("round {round}: changing the ordering: {e}");
        }
        if let Err(e) = cleaned {
            panic!("round {round}: cleanup: {e}");
        }
    }
}
