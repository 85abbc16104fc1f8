//! `/metrics` and `/healthz` in a worker's own process: the library's
//! counters move as a subscriber works, and the queue's gauges are read
//! from the database at each scrape. (The `sluice serve` binary is tested
//! in tests/cli.rs.) One test: a process has one global recorder.

use std::time::Duration;

use sluice::{ConsumerOptions, HandlerError, Message, NewEvent, StreamOptions, Subscription};
use support::{http_get, sample, wait_until, TestDb};

#[tokio::test]
async fn metrics_move_while_a_subscriber_works() {
    let db = TestDb::new().await;
    let recorder = sluice_serve::install_recorder().expect("the only recorder of this process");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(sluice_serve::serve(listener, sluice_serve::State::new(db.pool.clone(), recorder), async move {
            let _ = stopped.await;
        }));

    let (status, body) = http_get(&address, "/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    sluice::create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();
    sluice::create_consumer(&db.pool, "orders", "billing", ConsumerOptions::default()).await.unwrap();
    let publish = |n: usize| {
        let pool = db.pool.clone();
        async move {
            let events = (0..n).map(|i| NewEvent::new("orders.eu.created", &i).unwrap());
            sluice::publish_batch(&pool, "orders", events).await.unwrap();
        }
    };
    publish(10).await;
    let (_, page) = http_get(&address, "/metrics").await;
    let lag = r#"sluice_consumer_lag_events{stream="orders",consumer="billing"}"#;
    assert_eq!(sample(&page, lag), Some(10.0), "the lag, from the database:\n{page}");
    assert_eq!(sample(&page, "sluice_database_up"), Some(1.0));

    let handle = sluice::sub(&db.pool, Subscription::new("orders", "billing"), |_: Message<serde_json::Value>| async {
        Ok::<_, HandlerError>(())
    })
    .await
    .unwrap();
    let acked = r#"sluice_tasks_acked_total{stream="orders",consumer="billing"}"#;
    let scrape = || async { http_get(&address, "/metrics").await.1 };
    wait_until(Duration::from_secs(20), "10 acks counted", || async { sample(&scrape().await, acked) == Some(10.0) })
        .await;
    publish(5).await;
    wait_until(Duration::from_secs(20), "15 acks counted", || async { sample(&scrape().await, acked) == Some(15.0) })
        .await;
    let page = scrape().await;
    assert_eq!(sample(&page, lag), Some(0.0), "no lag left:\n{page}");
    assert_eq!(
        sample(&page, r#"sluice_events_published_total{stream="orders"}"#),
        Some(15.0),
        "publishes counted:\n{page}"
    );
    assert!(
        page.contains(
            r#"sluice_task_handler_duration_seconds_bucket{stream="orders",consumer="billing",outcome="ok",le="0.001"}"#
        ),
        "the handler histogram with Sluice's buckets:\n{page}"
    );
    assert_eq!(
        sample(&page, r#"sluice_workers{stream="orders",consumer="billing",status="active"}"#).unwrap_or(0.0)
            + sample(&page, r#"sluice_workers{stream="orders",consumer="billing",status="idle"}"#).unwrap_or(0.0),
        1.0,
        "one worker, from the database:\n{page}"
    );
    for line in page.lines().filter(|l| l.starts_with("sluice_")) {
        assert!(!line.contains("event_id") && !line.contains("subject="), "no task or subject label: {line}");
    }

    handle.shutdown(Duration::from_secs(5)).await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
