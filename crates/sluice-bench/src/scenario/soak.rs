//! `soak`: many tasks through while publishing. A backlog of `--soak-ahead`
//! events is published first (not timed); then a publisher keeps up to that
//! many events ahead of the handlers while one consumer drains. Throughput
//! per window of `--soak-window` tasks shows a slowdown (a growing table,
//! bloat) as the ratio of the last window to the first. The backlog at each
//! window's end says whether the subscribers or the publisher set the pace.
//! At each window's end the bench also reads `sluice::storage_stats`: the
//! dead tuples and sizes of `sluice.tasks` and `sluice.events` (the server's
//! statistics, which lag busy sessions by a second or so).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::{sleep, Instant};

use super::Ctx;
use crate::db::{Bloat, Storage};
use crate::report::{count, r3, Report};
use crate::work::{
    noop_events, pool_size, publish_backlog, shutdown, start_noop, stream_with_consumers, wait_acked, Progress,
};

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let (n, window, ahead, batch) = (p.soak_n, p.soak_window, p.soak_ahead, p.batch as u64);
    // The subscribers', the publisher's and the storage sampler's connections.
    let pool = ctx.db.pool(pool_size(p.workers) + 2).await?;
    stream_with_consumers(&pool, "soak", &["soak"]).await?;
    let consumer_id = crate::db::consumer_id(&pool, "soak", "soak").await?;
    ctx.out.progress(&format!("soak: {n} tasks, windows of {window}, publisher up to {ahead} ahead"));

    // The backlog to start with, published before the clock starts.
    let prefill = ahead.min(n);
    publish_backlog(&pool, "soak", prefill, p.batch).await?;
    let published = Arc::new(AtomicU64::new(prefill));
    let progress = Progress::with_gauge(n, window, Some(published.clone()));
    let start = Instant::now();
    let deadline = start + p.timeout().max(Duration::from_secs(n / 1000));
    let handles = start_noop(&pool, &p.sub_config(), "soak", "soak", p.workers, &progress).await?;
    let publisher = {
        let (pool, progress, published) = (pool.clone(), progress.clone(), published.clone());
        tokio::spawn(async move {
            let mut waits = 0u64;
            loop {
                let done = published.load(Ordering::Relaxed);
                if done >= n {
                    break;
                }
                let k = batch.min(n - done);
                if done + k - progress.handled() > ahead {
                    waits += 1;
                    sleep(Duration::from_millis(2)).await;
                    continue;
                }
                sluice::publish_batch(&pool, "soak", noop_events(done, k)?).await?;
                published.fetch_add(k, Ordering::Relaxed);
            }
            Ok::<u64, anyhow::Error>(waits)
        })
    };
    // The storage statistics as each window of tasks has been handled.
    let sampler = {
        let (pool, progress) = (pool.clone(), progress.clone());
        tokio::spawn(async move {
            let windows = n / window;
            let mut read = Vec::with_capacity(windows as usize);
            for i in 1..=windows {
                while progress.handled() < i * window {
                    if Instant::now() >= deadline {
                        return Ok(read);
                    }
                    sleep(Duration::from_millis(5)).await;
                }
                read.push(Storage::read(&pool).await?);
            }
            Ok::<_, anyhow::Error>(read)
        })
    };
    let waited = async {
        progress.wait(deadline).await?;
        wait_acked(&pool, consumer_id, deadline).await
    }
    .await;
    let total_s = start.elapsed().as_secs_f64();
    shutdown(handles).await;
    let publisher_waits = publisher.await??;
    waited?;
    let windows_storage = sampler.await??;
    pool.close().await;

    // Window i ran from the previous mark (or the start) to its own mark.
    let marks = progress.marks();
    let mut per_window = Vec::with_capacity(marks.len());
    let mut backlog = Vec::with_capacity(marks.len());
    let mut previous = start;
    for (i, (at, published)) in marks.iter().enumerate() {
        per_window.push(window as f64 / (*at - previous).as_secs_f64());
        backlog.push(published.saturating_sub((i as u64 + 1) * window));
        previous = *at;
    }
    let first = per_window.first().copied().unwrap_or(0.0);
    let last = per_window.last().copied().unwrap_or(0.0);
    let ratio = if first > 0.0 { last / first } else { 0.0 };

    // Statistics are reported by backends when idle or on exit.
    sleep(Duration::from_millis(1100)).await;
    let stats_pool = ctx.db.pool(1).await?;
    let bloat = Bloat::read(&stats_pool).await?;
    stats_pool.close().await;

    let mut report = Report::new("soak");
    report.line(format!(
        "{} tasks in {total_s:.1} s ({} published before the start): {} tasks/s overall (publisher waited {publisher_waits} times for room)",
        count(n as f64),
        count(prefill as f64),
        count(n as f64 / total_s)
    ));
    report.line(format!(
        "per window of {} tasks: tasks/s; backlog (published, not yet handled) at its end; storage_stats then",
        count(window as f64)
    ));
    for (i, (tps, b)) in per_window.iter().zip(&backlog).enumerate() {
        let storage = windows_storage.get(i).map_or_else(|| "-".to_string(), Storage::human);
        report.line(format!("  {:>3}  {:>8} tasks/s  backlog {:>9}  {storage}", i + 1, count(*tps), count(*b as f64)));
    }
    report.line(format!("first {} last {} last/first {:.2}", count(first), count(last), ratio));
    report.line(format!("at the end: {}", bloat.human()));
    report.set("n", n);
    report.set("window", window);
    report.set("ahead", ahead);
    report.set("seconds", r3(total_s));
    report.set("tasks_per_s", (n as f64 / total_s).round());
    report.set("windows_tasks_per_s", per_window.iter().map(|x| x.round()).collect::<Vec<_>>());
    report.set("windows_backlog", backlog);
    report.set("windows_tables", &windows_storage);
    report.set("first_window", first.round());
    report.set("last_window", last.round());
    report.set("last_over_first", r3(ratio));
    report.set("tables_at_end", json!(bloat));
    Ok(report)
}
