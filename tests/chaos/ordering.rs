//! Out-of-order commits under load: many concurrent publishing transactions
//! of random length (sleeps between their statements, a few held open for a
//! second or more), some rolled back, while two consumers with different
//! filters work. An event with a small id often commits after events with
//! larger ids; a "last id seen" position would skip it.
//!
//! - `eu` (`orders.eu.>`) acks in the handler's transaction: every committed
//!   matching event exactly once;
//! - `created` (`orders.*.created`, excluding `orders.us.>`) acks
//!   implicitly: at least once, duplicates counted;
//! - neither ever sees a rolled-back event, or one its filters refuse.
//!
//! `eu` refills in chunks of 7 events, so a window is worked through in many
//! steps while transactions inside it are still open.
//!
//! Sizes: `CHAOS_ORDER_TXNS` (3,000), `CHAOS_ORDER_PUBLISHERS` (16),
//! `CHAOS_SEED` (random; printed, to replay a run).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, publish_batch, sub, ConsumerOptions, HandlerError, Message, NewEvent, Start,
    StreamOptions, Subscription,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use support::TestDb;
use tokio::time::{sleep, Instant};

use crate::{env_or, figure, secs, tally};

const TEST: &str = "out_of_order_commits";
const STREAM: &str = "orders";
const REGIONS: [&str; 3] = ["eu", "us", "asia"];
const ACTIONS: [&str; 3] = ["created", "updated", "deleted"];

struct Txn {
    /// (event id, region, action) of each event it wrote.
    events: Vec<(i64, &'static str, &'static str)>,
    /// The order of its commit among all commits; None: rolled back.
    commit: Option<u64>,
}

fn matches_eu(region: &str, _action: &str) -> bool {
    region == "eu"
}

fn matches_created(region: &str, action: &str) -> bool {
    action == "created" && region != "us"
}

pub async fn run() {
    let txns: usize = env_or("CHAOS_ORDER_TXNS", 3_000);
    let publishers: usize = env_or("CHAOS_ORDER_PUBLISHERS", 16);
    let seed: u64 = env_or("CHAOS_SEED", rand::rng().random());
    figure(TEST, "seed (CHAOS_SEED)", seed);

    let db = TestDb::new().await;
    create_stream(&db.pool, STREAM, StreamOptions::default()).await.unwrap();
    let eu = ConsumerOptions::default().include(["orders.eu.>"]).start(Start::Beginning);
    create_consumer(&db.pool, STREAM, "eu", eu).await.unwrap();
    let created =
        ConsumerOptions::default().include(["orders.*.created"]).exclude(["orders.us.>"]).start(Start::Beginning);
    create_consumer(&db.pool, STREAM, "created", created).await.unwrap();
    sqlx::query("CREATE TABLE deliveries (consumer text NOT NULL, event_id bigint NOT NULL, attempt int NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();

    let work_pool = PgPoolOptions::new().max_connections(16).connect(&db.url).await.unwrap();
    let mut subscribers = Vec::new();
    for consumer in ["eu", "created", "eu", "created"] {
        let handler_pool = work_pool.clone();
        let subscription =
            Subscription::new(STREAM, consumer).concurrency(4).batch_size(50).poll_interval(Duration::from_millis(100));
        // `eu` moves its position in chunks of a few events, so windows are
        // cut in the middle of out-of-order transactions too.
        let subscription = if consumer == "eu" { subscription.refill_chunk(7) } else { subscription };
        let handle = sub(&work_pool, subscription, move |msg: Message<Value>| {
            let pool = handler_pool.clone();
            async move {
                let record = sqlx::query("INSERT INTO deliveries (consumer, event_id, attempt) VALUES ($1, $2, $3)")
                    .bind(msg.consumer().to_string())
                    .bind(msg.id().0)
                    .bind(msg.attempt());
                if msg.consumer() == "eu" {
                    let mut tx = pool.begin().await?;
                    record.execute(&mut *tx).await?;
                    msg.ack_tx(&mut *tx).await?;
                    tx.commit().await?;
                } else {
                    record.execute(&pool).await?;
                }
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .unwrap();
        subscribers.push(handle);
    }

    let publish_pool = PgPoolOptions::new().max_connections(publishers as u32).connect(&db.url).await.unwrap();
    let log: Arc<Mutex<Vec<Txn>>> = Arc::new(Mutex::new(Vec::with_capacity(txns)));
    let next = Arc::new(AtomicUsize::new(0));
    let commits = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|i| {
            let rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
            tokio::spawn(publisher(publish_pool.clone(), rng, txns, next.clone(), commits.clone(), log.clone()))
        })
        .collect();
    for t in tasks {
        t.await.expect("publisher task");
    }
    let published_in = started.elapsed();

    let log = std::mem::take(&mut *log.lock().unwrap());
    let expected = |f: fn(&str, &str) -> bool| -> HashSet<i64> {
        log.iter()
            .filter(|t| t.commit.is_some())
            .flat_map(|t| t.events.iter().filter(|(_, r, a)| f(r, a)).map(|(id, _, _)| *id))
            .collect()
    };
    let want: [(&str, HashSet<i64>); 2] = [("eu", expected(matches_eu)), ("created", expected(matches_created))];
    let rolled_back: HashSet<i64> =
        log.iter().filter(|t| t.commit.is_none()).flat_map(|t| t.events.iter().map(|e| e.0)).collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = true;
        for (consumer, ids) in &want {
            let (distinct, left) = progress(&db.pool, consumer).await;
            done &= distinct >= ids.len() as i64 && left == 0;
        }
        if done || Instant::now() > deadline {
            break;
        }
        sleep(Duration::from_millis(200)).await;
    }
    let drained_in = started.elapsed();
    // Anything late (a stray redelivery, a rolled-back event) would show now.
    sleep(Duration::from_secs(1)).await;
    for s in subscribers {
        s.shutdown(Duration::from_secs(5)).await;
    }

    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT consumer, event_id, count(*) FROM deliveries GROUP BY 1, 2")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let committed_events: usize = log.iter().filter(|t| t.commit.is_some()).map(|t| t.events.len()).sum();
    figure(
        TEST,
        "transactions committed / rolled back",
        format!("{} / {}", log.len() - rolled_back_txns(&log), rolled_back_txns(&log)),
    );
    figure(TEST, "events committed / rolled back", format!("{committed_events} / {}", rolled_back.len()));
    figure(TEST, "commits out of id order", out_of_order(&log));
    figure(TEST, "published in", secs(published_in));
    figure(TEST, "all delivered in", secs(drained_in));
    tally("events", committed_events as u64);

    let mut failures = Vec::new();
    for (consumer, ids) in &want {
        let got: HashMap<i64, i64> =
            rows.iter().filter(|(c, _, _)| c == consumer).map(|(_, id, n)| (*id, *n)).collect();
        let missing = ids.iter().filter(|id| !got.contains_key(id)).count();
        let rolled = got.keys().filter(|id| rolled_back.contains(id)).count();
        let foreign = got.keys().filter(|id| !ids.contains(id) && !rolled_back.contains(id)).count();
        let extra: i64 = got.values().map(|n| n - 1).sum();
        let left = progress(&db.pool, consumer).await.1;
        figure(TEST, &format!("{consumer}: matching committed events"), ids.len());
        figure(TEST, &format!("{consumer}: lost"), missing);
        figure(TEST, &format!("{consumer}: rolled-back events delivered"), rolled);
        figure(TEST, &format!("{consumer}: non-matching events delivered"), foreign);
        let kind = if *consumer == "eu" { "duplicated (transactional ack)" } else { "redelivered (implicit ack)" };
        figure(TEST, &format!("{consumer}: {kind}"), extra);
        tally("lost", missing as u64);
        tally("rolled back but delivered", rolled as u64);
        tally(if *consumer == "eu" { "duplicated" } else { "redelivered" }, extra as u64);
        if missing > 0 || rolled > 0 || foreign > 0 || left > 0 || (*consumer == "eu" && extra > 0) {
            failures.push(format!(
                "{consumer}: {missing} lost, {rolled} rolled back delivered, {foreign} non-matching, {extra} extra, {left} tasks left"
            ));
        }
    }
    assert!(failures.is_empty(), "seed {seed}: {}", failures.join("; "));
    assert!(out_of_order(&log) > 0, "no transaction committed out of id order: the test proved nothing");
}

fn rolled_back_txns(log: &[Txn]) -> usize {
    log.iter().filter(|t| t.commit.is_none()).count()
}

/// Committed transactions whose smallest event id is below the largest id
/// committed before them: the ones a "last id seen" position would skip.
fn out_of_order(log: &[Txn]) -> usize {
    let mut committed: Vec<(u64, i64, i64)> = log
        .iter()
        .filter_map(|t| {
            let min = t.events.iter().map(|e| e.0).min()?;
            let max = t.events.iter().map(|e| e.0).max()?;
            Some((t.commit?, min, max))
        })
        .collect();
    committed.sort();
    let mut highest = i64::MIN;
    let mut late = 0;
    for (_, min, max) in committed {
        if min < highest {
            late += 1;
        }
        highest = highest.max(max);
    }
    late
}

/// Distinct events delivered to `consumer` and its tasks left.
async fn progress(pool: &PgPool, consumer: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(DISTINCT event_id) FROM deliveries WHERE consumer = $1),
                (SELECT count(*) FROM sluice.tasks t JOIN sluice.consumers c ON c.id = t.consumer_id WHERE c.name = $1)",
    )
    .bind(consumer)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn publisher(
    pool: PgPool,
    mut rng: StdRng,
    txns: usize,
    next: Arc<AtomicUsize>,
    commits: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<Txn>>>,
) {
    while next.fetch_add(1, Ordering::Relaxed) < txns {
        let mut tx = pool.begin().await.unwrap();
        let mut events = Vec::new();
        let statements = rng.random_range(1..=3);
        // One in twenty holds its transaction open a good while after its
        // first event, so many later transactions commit before it.
        let long = rng.random_bool(0.05);
        for s in 0..statements {
            let batch: Vec<(&'static str, &'static str)> = (0..rng.random_range(1..=3))
                .map(|_| (REGIONS[rng.random_range(0..3)], ACTIONS[rng.random_range(0..3)]))
                .collect();
            let new = batch.iter().map(|(r, a)| NewEvent::new(format!("orders.{r}.{a}"), &json!({"r": r})).unwrap());
            let ids = publish_batch(&mut *tx, STREAM, new).await.unwrap();
            events.extend(ids.iter().zip(&batch).map(|(id, (r, a))| (id.0, *r, *a)));
            let pause = if long && s == 0 { rng.random_range(500..2_000) } else { rng.random_range(0..20) };
            sleep(Duration::from_millis(pause)).await;
        }
        let commit = if rng.random_bool(0.2) {
            tx.rollback().await.unwrap();
            None
        } else {
            tx.commit().await.unwrap();
            Some(commits.fetch_add(1, Ordering::SeqCst))
        };
        log.lock().unwrap().push(Txn { events, commit });
    }
}
