//! FIFO per key under load: 10,000 events over 50 keys and some without a
//! key, 8 subscribers in 2 processes, handlers of random length that
//! sometimes fail (and are retried) and sometimes defer. Every handler run
//! writes its start and end (the database's clock) into a business table;
//! from it the test checks that, for every key, the runs are in event order
//! and never overlap, that every event was handled, and that keyless events
//! were handled while keys had tasks waiting.
//!
//! This binary is also the worker: run with SLUICE_FIFO_WORKER set to a
//! database URL it runs four subscribers until killed. (No libtest harness:
//! the child must not run the test again.)

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, publish_batch, sub, ConsumerOptions, Defer, HandlerError, Message, NewEvent,
    StreamOptions, Subscription,
};
use support::{wait_until, TestDb};

const WORKER_ENV: &str = "SLUICE_FIFO_WORKER";
const EVENTS: i64 = 10_000;
const KEYS: i64 = 50;
/// One event in this many has no key.
const KEYLESS_EVERY: i64 = 10;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if let Ok(url) = std::env::var(WORKER_ENV) {
        rt.block_on(worker(url));
        return;
    }
    let name = "every_keys_runs_are_in_order_and_never_overlap_across_processes";
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(ordered_under_load())));
    println!("test {name} ... {}", if result.is_ok() { "ok" } else { "FAILED" });
    if result.is_err() {
        std::process::exit(1);
    }
}

/// What a handler does with a task, decided by its event and attempt so
/// that every process agrees: mostly succeed, sometimes fail once, sometimes
/// defer once; each run takes 0 to 3 ms.
fn plan(event_id: i64, attempt: i32) -> (&'static str, Duration) {
    let h = (event_id.wrapping_mul(2_654_435_761)) % 1000;
    let outcome = match (attempt, h) {
        (1, 0..=39) => "fail",
        (1, 40..=59) => "defer",
        _ => "ok",
    };
    (outcome, Duration::from_micros((h as u64 * 7) % 3000))
}

async fn worker(url: String) {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(12).connect(&url).await.expect("worker connects");
    let mut handles = Vec::new();
    for _ in 0..4 {
        let subscription =
            Subscription::new("accounts", "ledger").concurrency(4).poll_interval(Duration::from_millis(200));
        let pool_h = pool.clone();
        let handle = sub(&pool, subscription, move |msg: Message<Value>| {
            let pool = pool_h.clone();
            async move {
                let event_id = msg.task().event_id.0;
                let (outcome, length) = plan(event_id, msg.attempt());
                // A keyless run notes how many keyed tasks were waiting then.
                let run: i64 = sqlx::query_scalar(
                    "INSERT INTO runs (key, seq, event_id, attempt, started, outcome, pid, waiting_then)
                     VALUES ($1, $2, $3, $4, clock_timestamp(), $5, $6,
                             CASE WHEN $1 IS NULL THEN (SELECT count(*) FROM sluice.tasks WHERE state = 'waiting') END)
                     RETURNING id",
                )
                .bind(msg.payload()["key"].as_str())
                .bind(msg.payload()["seq"].as_i64())
                .bind(event_id)
                .bind(msg.attempt())
                .bind(outcome)
                .bind(std::process::id() as i32)
                .fetch_one(&pool)
                .await?;
                tokio::time::sleep(length).await;
                sqlx::query("UPDATE runs SET ended = clock_timestamp() WHERE id = $1").bind(run).execute(&pool).await?;
                match outcome {
                    "fail" => Err(HandlerError::new("the ledger is busy")),
                    "defer" => {
                        msg.defer(Defer::by(Duration::from_millis(30)).reason("after the statement run")).await?;
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        })
        .await
        .expect("worker subscribes");
        handles.push(handle);
    }
    std::future::pending::<()>().await;
}

async fn ordered_under_load() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "accounts", StreamOptions::default()).await.unwrap();
    let options = ConsumerOptions::default()
        .ordered_by_key()
        .start(sluice::Start::Beginning)
        .backoff(Duration::from_millis(10), Duration::from_millis(40));
    create_consumer(&db.pool, "accounts", "ledger", options).await.unwrap();
    sqlx::query(
        "CREATE TABLE runs (id bigserial PRIMARY KEY, key text, seq bigint, event_id bigint NOT NULL,
                            attempt int NOT NULL, started timestamptz NOT NULL, ended timestamptz,
                            outcome text NOT NULL, pid int NOT NULL, waiting_then bigint)",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    // Each key's events numbered 1, 2, ... in publish order.
    let mut seq = vec![0i64; KEYS as usize];
    let events: Vec<NewEvent> = (0..EVENTS)
        .map(|n| {
            if n % KEYLESS_EVERY == 0 {
                return NewEvent::new("accounts.note", &json!({ "n": n })).unwrap();
            }
            let k = (n * 7 + n / 13) % KEYS;
            seq[k as usize] += 1;
            let key = format!("account-{k:02}");
            NewEvent::new("accounts.posted", &json!({ "key": key, "seq": seq[k as usize], "n": n })).unwrap().key(key)
        })
        .collect();
    for chunk in events.chunks(500) {
        publish_batch(&db.pool, "accounts", chunk.to_vec()).await.unwrap();
    }

    let exe = std::env::current_exe().unwrap();
    let mut workers: Vec<_> = (0..2)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .env(WORKER_ENV, &db.url)
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start a worker process")
        })
        .collect();
    let done = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(DISTINCT event_id) FROM runs WHERE outcome = 'ok' AND ended IS NOT NULL",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
            == EVENTS
    };
    wait_until(Duration::from_secs(300), "every event handled", done).await;
    for w in &mut workers {
        w.kill().await.unwrap();
    }

    // Both processes took tasks.
    let pids: i64 = sqlx::query_scalar("SELECT count(DISTINCT pid) FROM runs").fetch_one(&db.pool).await.unwrap();
    assert_eq!(pids, 2, "both worker processes handled tasks");
    // Each event handled once with success, and the failures and deferrals
    // planned happened (so the check below covers them).
    let (oks, fails, defers): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE outcome = 'ok'), count(*) FILTER (WHERE outcome = 'fail'),
                count(*) FILTER (WHERE outcome = 'defer') FROM runs",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(oks, EVENTS, "one successful run per event");
    assert!(fails > 100 && defers > 50, "failures {fails} and deferrals {defers} happened");

    // Per key, in the order the runs started: never before the previous run
    // ended, and the key's events in order (a retried or deferred event runs
    // again before the next one).
    let disorder: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT key, prev_seq, seq, prev_event, event_id FROM (
             SELECT key, seq, event_id, started,
                    lag(seq) OVER w AS prev_seq, lag(event_id) OVER w AS prev_event,
                    lag(ended) OVER w AS prev_ended, lag(outcome) OVER w AS prev_outcome
             FROM runs WHERE key IS NOT NULL
             WINDOW w AS (PARTITION BY key ORDER BY started, id)
         ) r
         WHERE prev_seq IS NOT NULL
           AND (started < prev_ended
                OR seq <> CASE WHEN prev_outcome = 'ok' THEN prev_seq + 1 ELSE prev_seq END)
         LIMIT 10",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        disorder.is_empty(),
        "runs out of order or overlapping, (key, prev seq, seq, prev event, event): {disorder:?}"
    );
    let firsts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT DISTINCT ON (key) seq FROM runs WHERE key IS NOT NULL ORDER BY key, started, id) f
         WHERE seq <> 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(firsts, 0, "each key starts with its first event");

    // Keyless events did not wait for the keys: most of them were handled
    // while keyed tasks were waiting.
    let (keyless, early): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE waiting_then > 0) FROM runs WHERE key IS NULL AND outcome = 'ok'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(keyless, EVENTS / KEYLESS_EVERY);
    assert!(early * 10 >= keyless * 8, "{early} of {keyless} keyless events handled while keyed tasks waited");
}
