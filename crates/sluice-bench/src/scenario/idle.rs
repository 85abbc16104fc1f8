//! `idle`: what subscribers cost the server while nothing is published. Ten
//! subscribers, one per consumer of one stream, run with no events; the
//! bench counts the transactions the bench database committed meanwhile
//! (`pg_stat_database.xact_commit`: every statement outside a transaction
//! is one), first with notifications (the default), then poll-only.
//!
//! Backends report their counts to the statistics at most once a second
//! while busy, so a count is exact to about one report per connection: the
//! window is long enough for that not to matter (20 s; smoke 2 s).

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio::time::{sleep, Instant};

use super::Ctx;
use crate::report::Report;
use crate::work::{pool_size, shutdown, start_noop, stream_with_consumers, Progress};

const SUBSCRIBERS: usize = 10;

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let (settle, window) = if p.smoke {
        (Duration::from_secs(1), Duration::from_secs(2))
    } else {
        (Duration::from_secs(5), Duration::from_secs(20))
    };
    let mut report = Report::new("idle");
    let mut runs = Vec::new();
    for poll_only in [false, true] {
        let stream = if poll_only { "idle_poll" } else { "idle" };
        let pool = ctx.db.pool(pool_size(SUBSCRIBERS)).await?;
        let consumers: Vec<String> = (1..=SUBSCRIBERS).map(|i| format!("{stream}_{i}")).collect();
        let names: Vec<&str> = consumers.iter().map(String::as_str).collect();
        stream_with_consumers(&pool, stream, &names).await?;
        let how = if poll_only { "poll-only" } else { "with notifications" };
        ctx.out.progress(&format!("idle: {SUBSCRIBERS} subscribers {how}, nothing published, {} s", window.as_secs()));

        let config = p.sub_config();
        let progress = Progress::new(u64::MAX, 0);
        let mut handles = Vec::with_capacity(SUBSCRIBERS);
        for consumer in &consumers {
            let mut one = config.clone();
            one.poll_only = poll_only;
            handles.extend(start_noop(&pool, &one, stream, consumer, 1, &progress).await?);
        }
        sleep(settle).await;
        let before = committed(&pool).await?;
        let start = Instant::now();
        sleep(window).await;
        let after = committed(&pool).await?;
        let secs = start.elapsed().as_secs_f64();
        shutdown(handles).await;
        pool.close().await;

        let per_s = (after - before) as f64 / secs;
        report.line(format!(
            "{SUBSCRIBERS} idle subscribers {how}: {per_s:.1} transactions/s against the server ({:.2} per subscriber), over {secs:.0} s",
            per_s / SUBSCRIBERS as f64
        ));
        runs.push(json!({ "poll_only": poll_only, "subscribers": SUBSCRIBERS, "seconds": secs.round(),
                          "transactions_per_s": (per_s * 10.0).round() / 10.0 }));
    }
    report.set("runs", runs);
    Ok(report)
}

/// Transactions the current database has committed, as the statistics know them now.
async fn committed(pool: &PgPool) -> anyhow::Result<i64> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *conn).await?;
    let n: i64 = sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}
