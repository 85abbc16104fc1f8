//! `scale`: the drain with 1, 2, 4 worker processes. The bench starts copies
//! of itself (`sluice-bench worker …`), each running one subscriber on the
//! consumer, and times from their start to the last ack in the database.
//! Each worker reports its peak resident memory when it exits.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use super::Ctx;
use crate::report::{bytes, count, r3, Report};
use crate::work::{publish_backlog, stream_with_consumers, wait_acked};
use crate::worker::{EXIT, HANDLED, PEAK_RSS};

/// A worker process and what it said on stdout.
struct Worker {
    child: Child,
    handled: Arc<AtomicU64>,
    /// Resolves to the peak RSS (kB) the worker reported when it exited.
    exit_line: JoinHandle<Option<u64>>,
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let exe = std::env::current_exe().context("finding the bench's own executable")?;
    let mut report = Report::new("scale");
    let mut runs = Vec::new();
    for &procs in &p.processes {
        let stream = format!("scale_{procs}");
        let pool = ctx.db.pool(2).await?;
        stream_with_consumers(&pool, &stream, &[stream.as_str()]).await?;
        let consumer_id = crate::db::consumer_id(&pool, &stream, &stream).await?;
        ctx.out
            .progress(&format!("scale: publishing {} events (not timed), then {procs} worker process(es)", p.scale_n));
        publish_backlog(&pool, &stream, p.scale_n, p.batch).await?;

        let start = Instant::now();
        let deadline = start + p.timeout();
        let mut workers = Vec::with_capacity(procs);
        for _ in 0..procs {
            workers.push(spawn(&exe, ctx, &stream)?);
        }
        let drained = async {
            loop {
                let handled: u64 = workers.iter().map(|w| w.handled.load(Ordering::Relaxed)).sum();
                if handled >= p.scale_n {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("timed out: the workers handled {handled} of {} tasks", p.scale_n);
                }
                if let Some(status) = workers.iter_mut().find_map(|w| w.child.try_wait().ok().flatten()) {
                    bail!("a worker process exited early ({status})");
                }
                sleep(Duration::from_millis(2)).await;
            }
            wait_acked(&pool, consumer_id, deadline).await
        }
        .await;
        let secs = start.elapsed().as_secs_f64();
        let peaks = stop(workers).await;
        pool.close().await;
        drained?;

        let per_s = p.scale_n as f64 / secs;
        let shown: Vec<String> =
            peaks.iter().map(|(h, kb)| format!("{} tasks, {}", count(*h as f64), bytes(*kb as i64 * 1024))).collect();
        report.line(format!(
            "{procs} process(es): {} tasks in {secs:.3} s: {} tasks/s; per process: {}",
            count(p.scale_n as f64),
            count(per_s),
            shown.join("; ")
        ));
        let per_process: Vec<_> = peaks.iter().map(|(h, kb)| json!({ "handled": h, "peak_rss_kb": kb })).collect();
        runs.push(json!({ "processes": procs, "n": p.scale_n, "seconds": r3(secs), "tasks_per_s": per_s.round(),
                          "per_process": per_process }));
    }
    report.set("runs", runs);
    Ok(report)
}

fn spawn(exe: &std::path::Path, ctx: &Ctx<'_>, stream: &str) -> anyhow::Result<Worker> {
    let p = ctx.params;
    let mut child = Command::new(exe)
        .arg("worker")
        .args(["--stream", stream, "--consumer", stream])
        .args(["--concurrency", &p.concurrency.to_string()])
        .args(["--claim-batch", &p.claim_batch.to_string()])
        .args(["--prefetch", &p.prefetch.to_string()])
        .args(["--poll-interval-ms", &p.poll_interval_ms.to_string()])
        .args(p.defaults.then_some("--defaults"))
        .args(p.pooling_transactions.then_some("--pooling-transactions"))
        .env("DATABASE_URL", ctx.db.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker process")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let handled = Arc::new(AtomicU64::new(0));
    let seen = handled.clone();
    let exit_line = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix(EXIT) {
                let field = |name: &str| rest.split_whitespace().find_map(|w| w.strip_prefix(name)?.parse().ok());
                if let Some(n) = field(HANDLED) {
                    seen.store(n, Ordering::Relaxed);
                }
                return field(PEAK_RSS);
            }
            if let Some(n) = line.strip_prefix(HANDLED).and_then(|n| n.parse().ok()) {
                seen.store(n, Ordering::Relaxed);
            }
        }
        None
    });
    Ok(Worker { child, handled, exit_line })
}

/// Closes each worker's stdin (a graceful stop) and collects what each
/// handled and its peak RSS in kB (0 when it did not say).
async fn stop(workers: Vec<Worker>) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(workers.len());
    let mut running = Vec::with_capacity(workers.len());
    for mut w in workers {
        drop(w.child.stdin.take());
        running.push(w);
    }
    for mut w in running {
        let peak = timeout(Duration::from_secs(30), &mut w.exit_line).await.ok().and_then(|r| r.ok()).flatten();
        if peak.is_none() {
            let _ = w.child.kill().await;
        }
        let _ = w.child.wait().await;
        out.push((w.handled.load(Ordering::Relaxed), peak.unwrap_or(0)));
    }
    out
}
