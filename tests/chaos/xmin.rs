//! A transaction pinning the xmin horizon (it holds an xid and stays open)
//! while 200,000 tasks go through. Dead task rows cannot be vacuumed while it
//! is open; the claim must keep going, and the refill must not re-read
//! everything since the pinned transaction (its xid sits in every snapshot's
//! in-progress list). Three phases on one consumer: before the pin, during
//! it, after it ends; each prints its throughput and dead tuples.
//!
//! At the end of each phase a manual VACUUM shows which dead tuples it can
//! remove: none of the pinned phase's while the pin holds, all of them after.
//!
//! A producer publishes in batches of 1,000, keeping at most 20,000 events
//! ahead of the handlers, so refill and claim run against new events all the
//! time. A phase fails as stalled when fewer than `CHAOS_STALL_MIN_TASKS`
//! (100) tasks were handled in the last `CHAOS_STALL_SECS` (30): a crawl of
//! one task every few seconds is a stall too.
//!
//! Sizes: `CHAOS_XMIN_TASKS` (200,000, the pinned phase),
//! `CHAOS_XMIN_BEFORE` and `CHAOS_XMIN_AFTER` (50,000 each),
//! `CHAOS_STALL_SECS` (30), `CHAOS_STALL_MIN_TASKS` (100).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, publish_batch, sub, ConsumerOptions, HandlerError, Message, NewEvent, Start,
    StreamOptions, Subscription,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use support::TestDb;
use tokio::time::{sleep, Instant};

use crate::{env_or, figure, rate, secs, tally};

const TEST: &str = "pinned_xmin";
const STREAM: &str = "load";
const CONSUMER: &str = "work";
const AHEAD: u64 = 20_000;

/// What the handlers saw.
#[derive(Default)]
struct Seen {
    ids: Mutex<HashSet<i64>>,
    distinct: AtomicU64,
    again: AtomicU64,
}

impl Seen {
    fn record(&self, id: i64) {
        if self.ids.lock().unwrap().insert(id) {
            self.distinct.fetch_add(1, Ordering::Relaxed);
        } else {
            self.again.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bloat {
    dead_tasks: i64,
    dead_events: i64,
    tasks_bytes: i64,
    claim_index_bytes: i64,
}

impl std::fmt::Display for Bloat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dead tuples tasks {} / events {}; tasks table {} kB, claim index {} kB",
            self.dead_tasks,
            self.dead_events,
            self.tasks_bytes / 1024,
            self.claim_index_bytes / 1024
        )
    }
}

async fn bloat(pool: &PgPool) -> Bloat {
    let (dead_tasks, dead_events, tasks_bytes, claim_index_bytes) = sqlx::query_as(
        "SELECT coalesce(sum(n_dead_tup) FILTER (WHERE relname = 'tasks'), 0)::bigint,
                coalesce(sum(n_dead_tup) FILTER (WHERE relname = 'events'), 0)::bigint,
                pg_relation_size('sluice.tasks'),
                pg_relation_size('sluice.tasks_claim_idx')
         FROM pg_stat_user_tables WHERE schemaname = 'sluice'",
    )
    .fetch_one(pool)
    .await
    .expect("read table statistics");
    Bloat { dead_tasks, dead_events, tasks_bytes, claim_index_bytes }
}

pub async fn run() {
    let before: u64 = env_or("CHAOS_XMIN_BEFORE", 50_000);
    let during: u64 = env_or("CHAOS_XMIN_TASKS", 200_000);
    let after: u64 = env_or("CHAOS_XMIN_AFTER", 50_000);
    let stall = Stall {
        window: Duration::from_secs(env_or("CHAOS_STALL_SECS", 30)),
        min: env_or("CHAOS_STALL_MIN_TASKS", 100),
    };

    let db = TestDb::new().await;
    create_stream(&db.pool, STREAM, StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, STREAM, CONSUMER, ConsumerOptions::default().start(Start::Beginning)).await.unwrap();
    let seen = Arc::new(Seen::default());
    let work_pool = PgPoolOptions::new().max_connections(8).connect(&db.url).await.unwrap();
    let handler_seen = seen.clone();
    let subscription =
        Subscription::new(STREAM, CONSUMER).concurrency(64).batch_size(500).poll_interval(Duration::from_millis(200));
    let subscriber = sub(&work_pool, subscription, move |msg: Message<Value>| {
        let seen = handler_seen.clone();
        async move {
            seen.record(msg.id().0);
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();

    let mut pin = PgConnection::connect(&db.url).await.unwrap();
    let mut published = 0;
    let mut pinned_at = None;
    for (phase, n) in [("before", before), ("during", during), ("after", after)] {
        match phase {
            "during" => {
                pin.execute("BEGIN").await.unwrap();
                let xid: String =
                    sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut pin).await.unwrap();
                figure(TEST, "pinning transaction xid", xid);
                pinned_at = Some(Instant::now());
            }
            "after" => {
                pin.execute("COMMIT").await.unwrap();
                let held = pinned_at.expect("pinned before").elapsed();
                figure(TEST, "xmin pinned for", secs(held));
            }
            _ => {}
        }
        let start_bloat = bloat(&db.pool).await;
        let again_before = seen.again.load(Ordering::Relaxed);
        let result = run_phase(&db.pool, &seen, phase, published, n, stall).await;
        published += n;
        figure(TEST, &format!("{phase}: tasks"), n);
        figure(TEST, &format!("{phase}: throughput"), rate(n, result.elapsed));
        figure(
            TEST,
            &format!("{phase}: first / last quarter"),
            format!("{} / {}", rate(n / 4, result.first_quarter), rate(n / 4, result.last_quarter)),
        );
        figure(TEST, &format!("{phase}: redelivered"), seen.again.load(Ordering::Relaxed) - again_before);
        figure(TEST, &format!("{phase}: at start"), start_bloat);
        figure(
            TEST,
            &format!("{phase}: peak dead tuples tasks / events"),
            format!("{} / {}", result.peak.0, result.peak.1),
        );
        figure(TEST, &format!("{phase}: at end"), result.end);
        // What a VACUUM can do about it now: with the pin held, nothing.
        sqlx::query("VACUUM sluice.tasks, sluice.events").execute(&db.pool).await.unwrap();
        let vacuumed = bloat(&db.pool).await;
        figure(
            TEST,
            &format!("{phase}: dead tuples a VACUUM leaves"),
            format!("tasks {} / events {}", vacuumed.dead_tasks, vacuumed.dead_events),
        );
    }

    let left = wait_for_no_tasks(&db.pool).await;
    subscriber.shutdown(Duration::from_secs(5)).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.events").fetch_one(&db.pool).await.unwrap();
    let log: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT action::text, coalesce(reason, ''), count(*) FROM sluice.task_log GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (action, reason, n) in log {
        figure(TEST, &format!("task log: {action}"), format!("{n} ({reason})"));
    }
    figure(TEST, "events", stored);
    figure(TEST, "lost", stored - seen.count() as i64);
    figure(TEST, "redelivered", seen.again.load(Ordering::Relaxed));
    figure(TEST, "tasks left", left);
    tally("events", stored as u64);
    tally("lost", (stored - seen.count() as i64).max(0) as u64);
    tally("redelivered", seen.again.load(Ordering::Relaxed));
    assert_eq!(stored as u64, published, "every event was stored");
    assert_eq!(seen.count(), published, "every event was handled");
    assert_eq!(left, 0, "tasks left behind");
}

struct PhaseResult {
    elapsed: Duration,
    first_quarter: Duration,
    last_quarter: Duration,
    peak: (i64, i64),
    end: Bloat,
}

/// A phase has stalled when fewer than `min` tasks were handled in the last
/// `window`: a crawl of a task every few seconds counts, not just a halt.
#[derive(Clone, Copy)]
struct Stall {
    window: Duration,
    min: u64,
}

async fn run_phase(pool: &PgPool, seen: &Arc<Seen>, phase: &str, offset: u64, n: u64, stall: Stall) -> PhaseResult {
    let target = offset + n;
    let started = Instant::now();
    let producer = {
        let (pool, seen) = (pool.clone(), seen.clone());
        tokio::spawn(async move {
            let mut next = offset;
            while next < target {
                while next - seen.count() > AHEAD {
                    sleep(Duration::from_millis(10)).await;
                }
                let end = (next + 1_000).min(target);
                let batch = (next..end).map(|k| NewEvent::new("load.task", &json!({ "n": k })).unwrap());
                publish_batch(&pool, STREAM, batch).await.expect("publish");
                next = end;
            }
        })
    };
    let (mut q1, mut q3) = (None, None);
    let mut peak = (0, 0);
    // (when, handled) samples covering the last stall window.
    let mut recent: std::collections::VecDeque<(Instant, u64)> = [(Instant::now(), seen.count())].into();
    let mut next_report = Instant::now() + Duration::from_secs(5);
    loop {
        sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        let handled = seen.count();
        if q1.is_none() && handled >= offset + n / 4 {
            q1 = Some(started.elapsed());
        }
        if q3.is_none() && handled >= offset + 3 * n / 4 {
            q3 = Some(started.elapsed());
        }
        if handled >= target {
            break;
        }
        recent.push_back((now, handled));
        while recent.len() > 1 && now - recent[1].0 >= stall.window {
            recent.pop_front();
        }
        let (since, then) = recent[0];
        if now - since >= stall.window && handled - then < stall.min {
            panic!(
                "{phase}: stalled: {} tasks handled in the last {:?} (at {}/{n}); see docs/RELIABILITY.md",
                handled - then,
                stall.window,
                handled - offset
            );
        }
        if now >= next_report {
            let b = bloat(pool).await;
            peak = (peak.0.max(b.dead_tasks), peak.1.max(b.dead_events));
            println!(
                "    ... {phase} {:>5.1} s: {}/{n} handled, {}",
                started.elapsed().as_secs_f64(),
                handled - offset,
                b
            );
            next_report = now + Duration::from_secs(5);
        }
    }
    let elapsed = started.elapsed();
    producer.await.expect("producer");
    let end = bloat(pool).await;
    peak = (peak.0.max(end.dead_tasks), peak.1.max(end.dead_events));
    PhaseResult {
        elapsed,
        first_quarter: q1.unwrap_or(elapsed),
        last_quarter: elapsed - q3.unwrap_or(Duration::ZERO),
        peak,
        end,
    }
}

/// Waits (up to 30 s) until the consumer's acks are flushed; returns the tasks left.
async fn wait_for_no_tasks(pool: &PgPool) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.tasks").fetch_one(pool).await.unwrap();
        if left == 0 || Instant::now() > deadline {
            return left;
        }
        sleep(Duration::from_millis(100)).await;
    }
}
