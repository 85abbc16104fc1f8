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
