//! Wake-ups are hints (issue 11). Only one publish of a stream in
//! `NOTIFY_INTERVAL` carries a notification, so that concurrent publishers'
//! commits do not queue on the cluster-wide notification lock; the events
//! committed after a notifying one are found by the subscriber's follow-up
//! fetches, not by its poll.
//!
//! Its own test binary: the interval is set for the whole process, and here
//! it is an hour, so that no publish after the first notifies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, publish, sub, ConsumerOptions, HandlerError, Message, NewEvent, StreamOptions,
    Subscription,
};
use sqlx::Connection as _;
use support::{wait_until, TestDb};

const WAIT: Duration = Duration::from_secs(30);

fn job(n: i64) -> NewEvent {
    NewEvent::new("jobs.run", &json!({ "n": n })).unwrap()
}

async fn recorder(db: &TestDb, seen: &Arc<Mutex<Vec<i64>>>) -> sluice::SubscriberHandle {
    // The poll is an hour away: only notifications and follow-ups bring work.
    counting(db, Subscription::new("jobs", "c").poll_interval(Duration::from_secs(3600)), seen).await
}

#[tokio::test]
async fn events_committed_after_a_notification_are_handled_without_waiting_for_the_poll() {
    sluice::set_notify_interval(Duration::from_secs(3600));
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let h = recorder(&db, &seen).await;
    // The subscriber has started and gone idle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A business transaction publishes while the notifying publish (the
    // first of the process) commits and wakes the subscriber; it commits
    // after the subscriber's fetch, and no notification follows it.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    publish(&db.pool, "jobs", job(1)).await.unwrap();
    publish(&mut *tx, "jobs", job(2)).await.unwrap();
    wait_until(WAIT, "the notified event", || async { seen.lock().unwrap().contains(&1) }).await;
    tx.commit().await.unwrap();
    // And plain publishes after it, while the subscriber follows up.
    publish(&db.pool, "jobs", job(3)).await.unwrap();
    wait_until(WAIT, "the events committed after the notification", || async {
        let seen = seen.lock().unwrap();
        seen.contains(&2) && seen.contains(&3)
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, [1, 2, 3]);
}

async fn listening_sessions(db: &TestDb, application: Option<&str>) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'
           AND ($1::text IS NULL OR application_name = $1)",
    )
    .bind(application)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn counting(db: &TestDb, subscription: Subscription, seen: &Arc<Mutex<Vec<i64>>>) -> sluice::SubscriberHandle {
    support::record_n(&db.pool, subscription, seen).await
}

#[tokio::test]
async fn a_poll_only_subscriber_listens_to_nothing_and_handles_every_event() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "polled", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "polled", "c", ConsumerOptions::default()).await.unwrap();
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let subscription = Subscription::new("polled", "c").poll_only().poll_interval(Duration::from_millis(200));
    let h = counting(&db, subscription, &seen).await;
    for n in 1..=50 {
        publish(&db.pool, "polled", job(n)).await.unwrap();
    }
    wait_until(WAIT, "all 50 handled by polling", || async { seen.lock().unwrap().len() == 50 }).await;
    assert_eq!(listening_sessions(&db, None).await, 0, "a poll-only subscriber runs no LISTEN");
    h.shutdown(Duration::from_secs(5)).await;
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_subscriber_listens_on_its_listen_url() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "listened", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "listened", "c", ConsumerOptions::default()).await.unwrap();
    let separator = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}application_name=sluice-listener", db.url);
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    // The poll is an hour away: the event comes through the listen_url's LISTEN.
    let subscription = Subscription::new("listened", "c").listen_url(url).poll_interval(Duration::from_secs(3600));
    let h = counting(&db, subscription, &seen).await;
    wait_until(WAIT, "the LISTEN on the listen_url", || async {
        listening_sessions(&db, Some("sluice-listener")).await == 1
    })
    .await;
    // The first publish of this stream in the process: it notifies.
    publish(&db.pool, "listened", job(1)).await.unwrap();
    wait_until(WAIT, "the notified event", || async { seen.lock().unwrap().len() == 1 }).await;
    h.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_listen_url_that_is_not_a_url_is_refused_by_name() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let subscription = Subscription::new("jobs", "c").listen_url("not a url");
    let refused = sub(&db.pool, subscription, |_: Message<Value>| async { Ok::<_, HandlerError>(()) }).await;
    match refused {
        Err(sluice::Error::Invalid(e @ sluice::InvalidInput::Setting { setting: "listen_url", .. })) => {
            assert!(e.to_string().contains("listen_url"), "{e}");
        }
        other => panic!("expected the listen_url refused, got {:?}", other.map(|_| ())),
    }
}

/// Issue 23, defect 5, in process: a subscriber with a credit waits on a
/// consumer whose tasks another subscriber holds; that one hands them back
/// one at a time (`Message::release`), and every one of them comes to the
/// waiting subscriber, however the releases and its fetches interleave.
#[tokio::test]
async fn every_released_task_comes_to_a_waiting_subscriber_with_room() {
    const TASKS: usize = 10;
    const ROUNDS: usize = 16;
    let db = TestDb::new().await;
    create_stream(&db.pool, "held", StreamOptions::default()).await.unwrap();
    for round in 0..ROUNDS {
        let consumer = format!("c{round}");
        create_consumer(&db.pool, "held", &consumer, ConsumerOptions::default()).await.unwrap();
        let batch = (0..TASKS as i64).map(job);
        sluice::publish_batch(&db.pool, "held", batch).await.unwrap();

        // The holder: takes all ten, then hands each back when told to (and
        // takes no more: its credit is set to 0 first).
        let holding = sluice::Credit::new(TASKS);
        let go = Arc::new(tokio::sync::Semaphore::new(0));
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (go2, held2) = (go.clone(), held.clone());
        let holder = sub(
            &db.pool,
            Subscription::new("held", &consumer).concurrency(TASKS).credit(holding.clone()),
            move |msg: Message<Value>| {
                let (go, held) = (go2.clone(), held2.clone());
                async move {
                    held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    go.acquire().await.expect("open").forget();
                    msg.release("handed back by the test").await?;
                    Ok::<_, HandlerError>(())
                }
            },
        )
        .await
        .unwrap();
        wait_until(WAIT, "the holder holding every task", || async {
            held.load(std::sync::atomic::Ordering::SeqCst) == TASKS
        })
        .await;

        // The waiting one: room for all ten, holds what it gets.
        let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
        let seen2 = seen.clone();
        let waiting = sub(
            &db.pool,
            Subscription::new("held", &consumer).concurrency(TASKS).credit(sluice::Credit::new(TASKS)),
            move |msg: Message<Value>| {
                let seen = seen2.clone();
                async move {
                    seen.lock().unwrap().push(msg.payload()["n"].as_i64().unwrap());
                    std::future::pending::<()>().await;
                    Ok::<_, HandlerError>(())
                }
            },
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        holding.set(0);
        go.add_permits(TASKS);
        let all = tokio::time::timeout(Duration::from_secs(10), async {
            while seen.lock().unwrap().len() < TASKS {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let got = seen.lock().unwrap().len();
        assert!(all.is_ok(), "round {round}: {got} of {TASKS} released tasks came to the waiting subscriber");
        holder.shutdown(Duration::from_secs(5)).await;
        waiting.shutdown(Duration::from_millis(500)).await;
    }
}

/// Issue 23, defect 5: a task requeued (`nack`) after its subscriber went
/// idle is available again at once, and the requeue wakes the stream's
/// subscribers: the poll here is an hour away.
#[tokio::test]
async fn a_requeued_task_wakes_the_subscribers_without_waiting_for_the_poll() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "requeued", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "requeued", "c", ConsumerOptions::default()).await.unwrap();
    publish(&db.pool, "requeued", job(1)).await.unwrap();
    let attempts: Arc<Mutex<Vec<i32>>> = Arc::default();
    let seen = attempts.clone();
    let subscription = Subscription::new("requeued", "c").poll_interval(Duration::from_secs(3600));
    let h = sub(&db.pool, subscription, move |msg: Message<Value>| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(msg.attempt());
            if msg.attempt() == 1 {
                // Past the subscriber's follow-up fetches: it waits for news.
                tokio::time::sleep(Duration::from_millis(600)).await;
                msg.nack(sluice::Nack::requeue_end().reason("not yet")).await?;
            }
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    wait_until(WAIT, "the requeued task handled again", || async { attempts.lock().unwrap().len() == 2 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*attempts.lock().unwrap(), [1, 2]);
}
