//! `sluice stats`: per consumer lag, tasks and workers, and the database's
//! health for a queue; `--watch` redraws it in place.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use sluice::{Accuracy, Figure};
use sqlx::PgPool;

use crate::output::{self, table, Out};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this stream.
    stream: Option<String>,
    /// Only this consumer of the stream.
    consumer: Option<String>,
    /// Redraw every SECONDS (default 2) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
}

pub async fn run(pool: &PgPool, out: Out, args: StatsArgs) -> Result<()> {
    let Some(every) = args.watch else {
        let stats = sluice::queue_stats(pool, args.stream.as_deref(), args.consumer.as_deref()).await?;
        return out.print(&stats, || render(&stats));
    };
    if !(every.is_finite() && every >= 0.1) {
        anyhow::bail!("invalid --watch {every}: redraw at most every 0.1 seconds");
    }
    let every = Duration::from_secs_f64(every);
    let terminal = std::io::stdout().is_terminal();
    loop {
        let stats = sluice::queue_stats(pool, args.stream.as_deref(), args.consumer.as_deref()).await?;
        let mut stdout = std::io::stdout().lock();
        if out.json {
            // One JSON document per line, for a pipe to read as it comes.
            writeln!(stdout, "{}", serde_json::to_string(&stats)?)?;
        } else {
            if terminal {
                // Home and clear: redraw in place.
                write!(stdout, "\x1b[H\x1b[2J")?;
            }
            writeln!(
                stdout,
                "{}  (every {}; Ctrl-C to stop)\n",
                output::time(Some(chrono::Utc::now())),
                output::duration(every)
            )?;
            writeln!(stdout, "{}", render(&stats).trim_end())?;
            if !terminal {
                writeln!(stdout)?;
            }
        }
        stdout.flush()?;
        drop(stdout);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// A count of `sluice stats` as printed: `3`, `≥10000` (counted up to the
/// cap and stopped) or `≈9999016` (estimated past the cap).
pub(crate) fn figure(c: &sluice::ConsumerStats, figure: Figure) -> String {
    format!("{}{}", c.accuracy(figure).mark(), c.count(figure))
}

fn render(stats: &sluice::QueueStats) -> String {
    let mut t = table([
        "STREAM", "CONSUMER", "EVENTS", "LAG", "LAG AGE", "SCHED", "WAIT", "AVAIL", "RUN", "DEAD", "CANCEL",
        "HEAD AGE", "DONE/MIN", "FAIL/MIN", "WORKERS",
    ]);
    for c in &stats.consumers {
        let mut workers = format!("{} active, {} idle", c.workers_active, c.workers_idle);
        if c.workers_stopping > 0 {
            workers.push_str(&format!(", {} stopping", c.workers_stopping));
        }
        if c.workers_gone > 0 {
            workers.push_str(&format!(", {} gone", c.workers_gone));
        }
        let consumer = if c.paused { format!("{} (paused)", c.consumer) } else { c.consumer.clone() };
        let n = |f: Figure| figure(c, f);
        t.add_row([
            c.stream.clone(),
            consumer,
            n(Figure::Events),
            n(Figure::LagEvents),
            output::age(c.lag_oldest_at),
            n(Figure::Scheduled),
            n(Figure::Waiting),
            n(Figure::Available),
            n(Figure::Running),
            n(Figure::Discarded),
            n(Figure::Cancelled),
            output::age(c.oldest_available_at),
            c.completed_last_minute.to_string(),
            c.failed_last_minute.to_string(),
            workers,
        ]);
    }
    let mut text = if stats.consumers.is_empty() { "no consumers\n".to_string() } else { format!("{t}\n") };
    let marks: Vec<Accuracy> = stats.consumers.iter().flat_map(|c| c.inexact.values().copied()).collect();
    if marks.contains(&Accuracy::AtLeast) {
        text.push_str(&format!(
            "≥ counted up to {} and stopped; no estimate (the table was never analyzed, or not since it grew)\n",
            stats.count_cap
        ));
    }
    if marks.contains(&Accuracy::Estimated) {
        text.push_str(&format!(
            "≈ counted up to {} and stopped: estimated from the planner's statistics (as of the last ANALYZE)\n",
            stats.count_cap
        ));
    }
    let db = &stats.database;
    text.push_str("\ndatabase\n");
    match &db.xmin_holder {
        Some(h) => text.push_str(&format!(
            "  xmin horizon   {} old ({} transactions), held by {} {} ({}; {}; query started {})\n",
            h.age_seconds.map(|s| output::duration(Duration::from_secs_f64(s.max(0.0)))).unwrap_or_else(|| "?".into()),
            h.xid_age.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            h.kind,
            h.pid.map(|p| format!("pid {p}")).unwrap_or_default(),
            h.application.as_deref().filter(|a| !a.is_empty()).unwrap_or("no application name"),
            h.state.as_deref().unwrap_or("-"),
            output::time(h.query_start),
        )),
        None => text.push_str("  xmin horizon   nothing holds vacuum back\n"),
    }
    text.push_str(&format!("  autovacuum     {}\n", if db.autovacuum { "on" } else { "OFF" }));
    let dead = db.dead_rows.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ");
    text.push_str(&format!("  dead rows      {dead}\n"));
    text
}
