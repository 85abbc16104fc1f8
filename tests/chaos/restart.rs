//! Postgres restarted in the middle of processing, twice: a `fast` stop
//! (sessions terminated, clean shutdown) and an `immediate` one (every
//! process killed, WAL replayed on start), each with the server down for a
//! while. Runs on a private cluster (see `cluster.rs`), never the shared one.
//!
//! Two subscribers work throughout and must reconnect on their own. Two
//! publishers keep publishing batches through both outages on a pool with a
//! short acquire timeout; each call either reports the ids it wrote or fails
//! with an error. Afterwards: every event reported written is stored and
//! delivered, each failed call surfaced a `sluice::Error::Database`, and no
//! call hung.
//!
//! Sizes: `CHAOS_RESTART_PHASE_MS` (running time before, between and after
//! the restarts, 3,000), `CHAOS_RESTART_DOWN_MS` (how long the server stays
//! down, 2,000).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, publish_batch, sub, ConsumerOptions, HandlerError, Message, NewEvent, Start,
    StreamOptions, Subscription,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::time::{sleep, Instant};

use crate::cluster::Cluster;
use crate::{env_or, figure, secs, tally};

const TEST: &str = "postgres_restart";
const STREAM: &str = "jobs";
const CONSUMER: &str = "work";
const BATCH: i64 = 5;

#[derive(Default)]
struct PublishLog {
    /// (seq, event id) of every event a call reported written.
    written: Vec<(i64, i64)>,
    /// Seqs of the events of calls that failed.
    failed: Vec<i64>,
    calls_ok: u64,
    calls_failed: u64,
    /// Failed calls whose error was not `Error::Database`.
    unclear: u64,
    /// Calls that neither returned nor failed within 30 s.
    hung: u64,
    messages: BTreeMap<String, u64>,
}

pub async fn run() {
    let phase = Duration::from_millis(env_or("CHAOS_RESTART_PHASE_MS", 3_000));
    let down = Duration::from_millis(env_or("CHAOS_RESTART_DOWN_MS", 2_000));

    let cluster = Cluster::create().await;
    cluster.start().await;
    let mut admin = PgConnection::connect(&cluster.url("postgres")).await.expect("connect to the private cluster");
    admin.execute("CREATE DATABASE chaos").await.unwrap();
    admin.close().await.ok();
    let url = cluster.url("chaos");

    let pool = PgPoolOptions::new().max_connections(10).connect(&url).await.unwrap();
    sluice::migrate(&pool).await.unwrap();
    create_stream(&pool, STREAM, StreamOptions::default()).await.unwrap();
    let options = ConsumerOptions::default()
        .start(Start::Beginning)
        .lease(Duration::from_secs(5))
        .max_attempts(1000)
        .backoff(Duration::from_millis(50), Duration::from_secs(1));
    create_consumer(&pool, STREAM, CONSUMER, options).await.unwrap();
    sqlx::query("CREATE TABLE handled (event_id bigint NOT NULL, seq bigint NOT NULL, attempt int NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();

    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let handler_pool = pool.clone();
        let subscription = Subscription::new(STREAM, CONSUMER)
            .concurrency(8)
            .batch_size(50)
            .poll_interval(Duration::from_millis(200))
            .heartbeat(Duration::from_millis(250))
            .dead_after(Duration::from_secs(3));
        let handle = sub(&pool, subscription, move |msg: Message<Value>| {
            let pool = handler_pool.clone();
            async move {
                sqlx::query("INSERT INTO handled (event_id, seq, attempt) VALUES ($1, $2, $3)")
                    .bind(msg.id().0)
                    .bind(msg.payload()["seq"].as_i64())
                    .bind(msg.attempt())
                    .execute(&pool)
                    .await?;
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap();
        subscribers.push(handle);
    }

    // The publishers' pool gives up on a connection after a second, so an
    // outage surfaces as errors instead of calls waiting it out.
    let publish_pool =
        PgPoolOptions::new().max_connections(4).acquire_timeout(Duration::from_secs(1)).connect(&url).await.unwrap();
    let log = Arc::new(Mutex::new(PublishLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicI64::new(0));
    let publishers: Vec<_> =
        (0..2).map(|_| tokio::spawn(publisher(publish_pool.clone(), log.clone(), stop.clone(), seq.clone()))).collect();
    // Probes wait out an outage (sqlx retries refused connections until its acquire timeout).
    let probe =
        PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(60)).connect(&url).await.unwrap();

    sleep(phase).await;
    for (i, mode) in ["fast", "immediate"].into_iter().enumerate() {
        let calls_before = log.lock().unwrap().calls_failed;
        cluster.stop(mode).await;
        sleep(down).await;
        cluster.start().await;
        let back = Instant::now();
        let handled_at_start = handled(&probe).await;
        while handled(&probe).await <= handled_at_start {
            assert!(back.elapsed() < Duration::from_secs(60), "subscribers did not resume within 60 s of restart {i}");
            sleep(Duration::from_millis(50)).await;
        }
        figure(TEST, &format!("restart {} ({mode}): handling resumed after", i + 1), secs(back.elapsed()));
        sleep(phase).await;
        let failed = log.lock().unwrap().calls_failed - calls_before;
        figure(TEST, &format!("restart {} ({mode}): publish calls failed", i + 1), failed);
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.expect("publisher task");
    }

    // Everything stored must be delivered: wait for it.
    let drained = Instant::now();
    let mut finished = false;
    while drained.elapsed() < Duration::from_secs(120) {
        let (undelivered, tasks): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM sluice.events e
                     WHERE NOT EXISTS (SELECT 1 FROM handled h WHERE h.event_id = e.id)),
                    (SELECT count(*) FROM sluice.tasks)",
        )
        .fetch_one(&probe)
        .await
        .unwrap();
        if undelivered == 0 && tasks == 0 {
            finished = true;
            break;
        }
        sleep(Duration::from_millis(200)).await;
    }
    let stored: HashSet<i64> = sqlx::query_scalar::<_, i64>("SELECT (payload->>'seq')::bigint FROM sluice.events")
        .fetch_all(&probe)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let delivered: Vec<i64> = sqlx::query_scalar("SELECT seq FROM handled").fetch_all(&probe).await.unwrap();
    let delivered_once: HashSet<i64> = delivered.iter().copied().collect();
    let states = support::task_states(&probe, CONSUMER).await;
    let running = subscribers.iter().filter(|s| !s.is_finished()).count();
    for s in subscribers {
        s.shutdown(Duration::from_secs(5)).await;
    }

    let log = std::mem::take(&mut *log.lock().unwrap());
    let written: HashSet<i64> = log.written.iter().map(|&(s, _)| s).collect();
    let missing = written.iter().filter(|s| !stored.contains(s)).count();
    let undelivered = stored.iter().filter(|s| !delivered_once.contains(s)).count();
    let ambiguous = log.failed.iter().filter(|s| stored.contains(s)).count();
    figure(TEST, "restarts", 2);
    figure(TEST, "publish calls ok / failed", format!("{} / {}", log.calls_ok, log.calls_failed));
    figure(TEST, "events reported written", written.len());
    figure(TEST, "events refused with an error", log.failed.len());
    figure(TEST, "refused but stored anyway (commit reply lost)", ambiguous);
    for (message, n) in &log.messages {
        figure(TEST, "publish error", format!("{n} × {message}"));
    }
    figure(TEST, "reported written but missing (lost)", missing);
    figure(TEST, "stored but never delivered (lost)", undelivered);
    figure(TEST, "redelivered (extra handlings)", delivered.len() - delivered_once.len());
    figure(TEST, "tasks left", format!("{states:?}"));
    tally("events", stored.len() as u64);
    tally("Postgres restarts", 2);
    tally("lost", (missing + undelivered) as u64);
    tally("redelivered", (delivered.len() - delivered_once.len()) as u64);

    assert!(log.calls_failed > 0, "no publish call failed: the restarts were not seen by the publisher");
    assert_eq!(log.unclear, 0, "every failed publish must be a sluice::Error::Database");
    assert_eq!(log.hung, 0, "publish calls hung through the restart");
    assert_eq!(missing, 0, "events reported written are missing");
    assert!(finished && undelivered == 0, "stored events were never delivered: {undelivered}, tasks {states:?}");
    assert!(states.is_empty(), "tasks left behind: {states:?}");
    assert_eq!(running, 2, "a subscriber stopped on its own");
    pool.close().await;
    publish_pool.close().await;
    probe.close().await;
}

async fn handled(pool: &PgPool) -> i64 {
    // An outage may still break the probe's first query: count that as no progress.
    sqlx::query_scalar("SELECT count(*) FROM handled").fetch_one(pool).await.unwrap_or(-1)
}

async fn publisher(pool: PgPool, log: Arc<Mutex<PublishLog>>, stop: Arc<AtomicBool>, seq: Arc<AtomicI64>) {
    while !stop.load(Ordering::Relaxed) {
        let first = seq.fetch_add(BATCH, Ordering::Relaxed);
        let seqs: Vec<i64> = (first..first + BATCH).collect();
        let events = seqs.iter().map(|s| NewEvent::new("jobs.run", &json!({ "seq": s })).unwrap());
        let result = tokio::time::timeout(Duration::from_secs(30), publish_batch(&pool, STREAM, events)).await;
        {
            let mut log = log.lock().unwrap();
            match result {
                Ok(Ok(ids)) => {
                    log.calls_ok += 1;
                    log.written.extend(seqs.iter().copied().zip(ids.iter().map(|id| id.0)));
                }
                Ok(Err(e)) => {
                    log.calls_failed += 1;
                    log.failed.extend(&seqs);
                    if !matches!(e, sluice::Error::Database(_)) {
                        log.unclear += 1;
                    }
                    let message: String = e.to_string().chars().take(140).collect();
                    *log.messages.entry(message).or_default() += 1;
                }
                Err(_) => {
                    log.hung += 1;
                    log.failed.extend(&seqs);
                }
            }
        }
        sleep(Duration::from_millis(10)).await;
    }
}
