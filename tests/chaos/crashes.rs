//! Worker processes killed with SIGKILL at random while they work.
//!
//! The test re-executes its own binary as the workers (`SLUICE_CHAOS_WORKER`
//! names the ack mode), kills one at random every few seconds and starts a
//! new one in its place, until every event is handled and every task gone.
//! The handler writes a row per handling into a table with no unique
//! constraint, so a duplicate would show:
//! - transactional ack: the row and `ack_tx` commit together, so each event
//!   has exactly one row, however often its handlers were killed;
//! - implicit ack: the row commits first and the ack is flushed later, so a
//!   kill in between hands the event out again (counted, not forbidden).
//!
//! Sizes: `CHAOS_CRASH_EVENTS` (100,000), `CHAOS_CRASH_WORKERS` (4),
//! `CHAOS_KILL_EVERY_MS` (3,000; each pause is drawn between half and one and
//! a half times it), `CHAOS_CRASH_CONCURRENCY` (handlers per worker, 8),
//! `CHAOS_CRASH_TIMEOUT_SECS` (900).

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, publish_batch, sub, ConsumerOptions, HandlerError, Message, NewEvent, Start,
    StreamOptions, Subscription,
};
use sqlx::postgres::PgPoolOptions;
use support::{task_states, TestDb};
use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

use crate::{env_or, figure, rate, secs, tally, WORKER_ENV};

const URL_ENV: &str = "SLUICE_CHAOS_URL";
const STREAM: &str = "jobs";
const CONSUMER: &str = "work";

/// How a worker acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The handler's row and `ack_tx` in one transaction.
    Transactional,
    /// The handler's row committed on its own, then `Ok` (batched ack).
    Implicit,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Transactional => "transactional",
            Mode::Implicit => "implicit",
        }
    }
}

fn subscription() -> Subscription {
    // Short heartbeat and dead_after: a killed worker's tasks come back
    // within a couple of seconds, through another worker's housekeeping.
    Subscription::new(STREAM, CONSUMER)
        .concurrency(env_or("CHAOS_CRASH_CONCURRENCY", 8))
        .batch_size(50)
        .poll_interval(Duration::from_millis(200))
        .heartbeat(Duration::from_millis(250))
        .dead_after(Duration::from_millis(1500))
}

/// The worker process: handles tasks until it is killed.
pub async fn worker(mode: String) {
    let mode = match mode.as_str() {
        "transactional" => Mode::Transactional,
        "implicit" => Mode::Implicit,
        other => panic!("unknown worker mode {other:?}"),
    };
    let url = std::env::var(URL_ENV).expect("the parent sets the database URL");
    let pool = PgPoolOptions::new().max_connections(10).connect(&url).await.expect("worker connects");
    let pid = std::process::id() as i32;
    let handler_pool = pool.clone();
    let _handle = sub(&pool, subscription(), move |msg: Message<Value>| {
        let pool = handler_pool.clone();
        async move {
            let insert = sqlx::query("INSERT INTO chaos_records (event_id, attempt, pid) VALUES ($1, $2, $3)")
                .bind(msg.id().0)
                .bind(msg.attempt())
                .bind(pid);
            match mode {
                Mode::Transactional => {
                    let mut tx = pool.begin().await?;
                    insert.execute(&mut *tx).await?;
                    // A lost lease fails here and the row rolls back with the transaction.
                    msg.ack_tx(&mut *tx).await?;
                    tx.commit().await?;
                }
                Mode::Implicit => {
                    insert.execute(&pool).await?;
                }
            }
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .expect("worker subscribes");
    std::future::pending::<()>().await;
}

fn spawn_worker(mode: Mode, url: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary path"))
        .env(WORKER_ENV, mode.as_str())
        .env(URL_ENV, url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start a worker process")
}

/// Handled events (distinct) and tasks left.
async fn progress(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT (SELECT count(DISTINCT event_id) FROM chaos_records), (SELECT count(*) FROM sluice.tasks)")
        .fetch_one(pool)
        .await
        .expect("read progress")
}

pub async fn run(mode: Mode) {
    let test = format!("worker_crashes_{}_ack", mode.as_str());
    let n: i64 = env_or("CHAOS_CRASH_EVENTS", 100_000);
    let workers: usize = env_or("CHAOS_CRASH_WORKERS", 4);
    let kill_every = Duration::from_millis(env_or("CHAOS_KILL_EVERY_MS", 3_000));
    let timeout = Duration::from_secs(env_or("CHAOS_CRASH_TIMEOUT_SECS", 900));
    assert!(workers >= 2, "CHAOS_CRASH_WORKERS: at least 2, so someone is alive to rescue a killed worker's tasks");

    let db = TestDb::new().await;
    create_stream(&db.pool, STREAM, StreamOptions::default()).await.unwrap();
    let options = ConsumerOptions::default()
        .start(Start::Beginning)
        .lease(Duration::from_secs(10))
        .backoff(Duration::from_millis(100), Duration::from_secs(2));
    create_consumer(&db.pool, STREAM, CONSUMER, options).await.unwrap();
    // No unique constraint, on purpose: a second handling would leave a second row.
    sqlx::query("CREATE TABLE chaos_records (event_id bigint NOT NULL, attempt int NOT NULL, pid int NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();

    let started = Instant::now();
    let pool = db.pool.clone();
    let publisher = tokio::spawn(async move {
        let mut next = 0;
        while next < n {
            let end = (next + 1_000).min(n);
            let batch: Vec<NewEvent> =
                (next..end).map(|k| NewEvent::new("jobs.run", &json!({"n": k})).unwrap()).collect();
            publish_batch(&pool, STREAM, batch).await.expect("publish");
            next = end;
        }
    });

    let mut children: Vec<Child> = (0..workers).map(|_| spawn_worker(mode, &db.url)).collect();
    let (mut kills, mut restarts, mut exited) = (0u64, 0u64, 0u64);
    let pause = || kill_every.mul_f64(rand::rng().random_range(0.5..1.5));
    let mut next_kill = Instant::now() + pause();
    let mut next_report = Instant::now() + Duration::from_secs(10);
    let finished = loop {
        sleep(Duration::from_millis(500)).await;
        for child in children.iter_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                eprintln!("    a worker exited on its own: {status}");
                exited += 1;
                *child = spawn_worker(mode, &db.url);
                restarts += 1;
            }
        }
        let (handled, left) = progress(&db.pool).await;
        if publisher.is_finished() && handled >= n && left == 0 {
            break true;
        }
        if started.elapsed() > timeout {
            break false;
        }
        let now = Instant::now();
        if now >= next_kill {
            let victim = rand::rng().random_range(0..workers);
            // SIGKILL: no shutdown, no release, no last ack flush.
            children[victim].start_kill().unwrap();
            children[victim].wait().await.unwrap();
            kills += 1;
            children[victim] = spawn_worker(mode, &db.url);
            restarts += 1;
            next_kill = now + pause();
        }
        if now >= next_report {
            println!(
                "    ... {:>4.0} s: {handled}/{n} handled, {left} tasks left, {kills} kills",
                started.elapsed().as_secs_f64()
            );
            next_report = now + Duration::from_secs(10);
        }
    };
    let elapsed = started.elapsed();
    for child in children.iter_mut() {
        child.start_kill().ok();
        child.wait().await.ok();
    }
    publisher.await.expect("the publisher finished");

    let published: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.events").fetch_one(&db.pool).await.unwrap();
    let (rows, distinct, repeated): (i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(c), 0)::bigint, count(*), count(*) FILTER (WHERE c > 1)
         FROM (SELECT event_id, count(*) AS c FROM chaos_records GROUP BY event_id) r",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let lost: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sluice.events e WHERE NOT EXISTS (SELECT 1 FROM chaos_records r WHERE r.event_id = e.id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let rescued: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.task_log WHERE action = 'lease_expired'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let states = task_states(&db.pool, CONSUMER).await;

    figure(&test, "events", published);
    figure(&test, "worker processes", workers);
    figure(&test, "kills (SIGKILL)", kills);
    figure(&test, "restarts", restarts);
    figure(&test, "tasks rescued from dead workers", rescued);
    figure(&test, "lost", lost);
    match mode {
        Mode::Transactional => {
            figure(&test, "duplicated (business row twice)", rows - distinct);
        }
        Mode::Implicit => {
            figure(&test, "redelivered (extra handlings)", rows - distinct);
            figure(&test, "events handled more than once", repeated);
        }
    }
    figure(&test, "tasks left", format!("{states:?}"));
    tally("events", published as u64);
    tally("worker kills", kills);
    tally("worker restarts", restarts);
    tally("lost", lost as u64);
    tally(if mode == Mode::Transactional { "duplicated" } else { "redelivered" }, (rows - distinct) as u64);
    figure(&test, "throughput with kills", rate(distinct as u64, elapsed));
    figure(&test, "time to drain", secs(elapsed));

    assert!(finished, "not every event was handled within {timeout:?} ({distinct}/{n}, tasks left {states:?})");
    assert_eq!(published, n, "every event was published");
    assert_eq!(lost, 0, "events lost");
    assert_eq!(exited, 0, "workers must only die when killed");
    assert!(kills > 0, "the run was too short to kill anyone; raise CHAOS_CRASH_EVENTS or lower CHAOS_KILL_EVERY_MS");
    if mode == Mode::Transactional {
        assert_eq!(rows, distinct, "a business row appears twice: the transactional ack is not exactly-once");
    }
    assert!(states.is_empty(), "tasks left behind: {states:?}");
}
