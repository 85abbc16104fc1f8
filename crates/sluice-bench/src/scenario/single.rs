//! `single`: single-event publishes from C concurrent clients, each on its
//! own connection, for `--single-secs` each way, as applications publish (one
//! event per request, from many connections at once). Three ways, one after
//! the other, into the same table:
//!
//! - `insert`: a plain `INSERT INTO sluice.events` of the same row, the
//!   baseline: what the server can commit without Sluice.
//! - `insert + notify`: the same INSERT and a `pg_notify` of the stream's
//!   channel in every transaction, as every publish did before issue 11.
//! - `publish`: `sluice::publish`, whose notifications are limited to one
//!   per stream per `sluice::NOTIFY_INTERVAL` in the process.
//!
//! Reported: commits per second each way, and `publish` against `insert`.
//! No subscriber runs: this measures the publishers' side only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sluice::NewEvent;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use super::Ctx;
use crate::report::{count, r3, Report};
use crate::work::{stream_with_consumers, SUBJECT};

const STREAM: &str = "single";

#[derive(Clone, Copy)]
enum Way {
    Insert,
    InsertNotify,
    Publish,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Insert => "insert",
            Way::InsertNotify => "insert + notify",
            Way::Publish => "publish",
        }
    }
}

/// One client's loop until `stop`: a transaction per event.
async fn client(
    pool: PgPool,
    way: Way,
    stream_id: i32,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let payload = json!({ "n": n }).to_string();
        match way {
            Way::Insert => {
                sqlx::query("INSERT INTO sluice.events (stream_id, subject, payload) VALUES ($1, $2, $3::jsonb)")
                    .bind(stream_id)
                    .bind(SUBJECT)
                    .bind(&payload)
                    .execute(&pool)
                    .await?;
            }
            Way::InsertNotify => {
                sqlx::query(
                    "WITH ins AS (INSERT INTO sluice.events (stream_id, subject, payload) VALUES ($1, $2, $3::jsonb)
                                  RETURNING stream_id)
                     SELECT pg_notify('sluice.' || stream_id, '') FROM ins",
                )
                .bind(stream_id)
                .bind(SUBJECT)
                .bind(&payload)
                .execute(&pool)
                .await?;
            }
            Way::Publish => {
                sluice::publish(&pool, STREAM, NewEvent::new(SUBJECT, &json!({ "n": n }))?).await?;
            }
        }
        n += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let mut report = Report::new("single");
    let mut runs = Vec::new();
    for &clients in &p.single_clients {
        let pool = ctx.db.pool(clients as u32).await?;
        stream_with_consumers(&pool, STREAM, &[]).await?;
        let stream_id: i32 =
            sqlx::query_scalar("SELECT id FROM sluice.streams WHERE name = $1").bind(STREAM).fetch_one(&pool).await?;
        let mut rates = Vec::new();
        for way in [Way::Insert, Way::InsertNotify, Way::Publish] {
            ctx.out.progress(&format!("single: {clients} clients, {} for {} s", way.name(), p.single_secs));
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let mut tasks = JoinSet::new();
            for _ in 0..clients {
                tasks.spawn(client(pool.clone(), way, stream_id, stop.clone(), done.clone()));
            }
            let start = Instant::now();
            sleep(Duration::from_secs_f64(p.single_secs)).await;
            stop.store(true, Ordering::Relaxed);
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            let per_s = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
            rates.push(per_s);
            runs.push(json!({ "clients": clients, "way": way.name(), "seconds": r3(p.single_secs),
                              "commits_per_s": per_s.round() }));
        }
        let (insert, notify, publish) = (rates[0], rates[1], rates[2]);
        report.line(format!(
            "{clients} clients, one event per transaction: insert {}/s, insert + notify {}/s, publish {}/s \
             (publish / insert {:.2})",
            count(insert),
            count(notify),
            count(publish),
            publish / insert
        ));
        pool.close().await;
    }
    report.set("runs", runs);
    Ok(report)
}
