//! The gauges read from the database at each scrape: what describes the
//! queue rather than one process. One query for the consumers
//! (`sluice::queue_stats`), one for the server's health. A scrape costs
//! the same whatever the backlog: counts stop at `sluice::STATS_COUNT_CAP`
//! and are estimated past it, which the `*_exact` gauges say.

use metrics::gauge;
use sqlx::PgPool;

/// 1 when the last scrape could read the database, else 0.
pub const DATABASE_UP: &str = "sluice_database_up";
/// Matching events not yet made into tasks, by `stream` and `consumer`.
pub const LAG_EVENTS: &str = "sluice_consumer_lag_events";
/// Age in seconds of the oldest of those, by `stream` and `consumer` (0 without lag).
pub const LAG_SECONDS: &str = "sluice_consumer_lag_seconds";
/// 1 when `sluice_consumer_lag_events` is counted exactly, 0 when it is an
/// estimate or a lower bound (the count reached `sluice_stats_count_cap`),
/// by `stream` and `consumer`.
pub const LAG_EVENTS_EXACT: &str = "sluice_consumer_lag_events_exact";
/// Tasks by `stream`, `consumer` and `state`: exact below
/// `sluice_stats_count_cap`, estimated (or the cap) at or above it.
pub const TASKS: &str = "sluice_tasks";
/// 1 when `sluice_tasks` is counted exactly, 0 when it is an estimate or a
/// lower bound, by `stream`, `consumer` and `state`.
pub const TASKS_EXACT: &str = "sluice_tasks_exact";
/// Age in seconds of the oldest available task, by `stream` and `consumer` (0 when none waits).
pub const OLDEST_AVAILABLE: &str = "sluice_oldest_available_task_age_seconds";
/// 1 when the consumer is paused, by `stream` and `consumer`.
pub const PAUSED: &str = "sluice_consumer_paused";
/// Workers by `stream`, `consumer` and `status` (active, idle, stopping, gone).
pub const WORKERS: &str = "sluice_workers";
/// Events the stream holds, by `stream`: exact below `sluice_stats_count_cap`.
pub const STREAM_EVENTS: &str = "sluice_stream_events";
/// 1 when `sluice_stream_events` is counted exactly, 0 when it is an estimate
/// or a lower bound, by `stream`.
pub const STREAM_EVENTS_EXACT: &str = "sluice_stream_events_exact";
/// How far the counts above are counted exactly (`sluice::STATS_COUNT_CAP`).
pub const COUNT_CAP: &str = "sluice_stats_count_cap";
/// Dead rows of Sluice's tables, by `table`.
pub const DEAD_ROWS: &str = "sluice_dead_rows";

/// Every gauge read from the database, with the xmin horizon's age
/// (`sluice::metrics::XMIN_HORIZON_AGE`).
pub const GAUGES: &[&str] = &[
    DATABASE_UP,
    LAG_EVENTS,
    LAG_EVENTS_EXACT,
    LAG_SECONDS,
    TASKS,
    TASKS_EXACT,
    OLDEST_AVAILABLE,
    PAUSED,
    WORKERS,
    STREAM_EVENTS,
    STREAM_EVENTS_EXACT,
    COUNT_CAP,
    DEAD_ROWS,
];

fn exact(c: &sluice::ConsumerStats, figure: sluice::Figure) -> f64 {
    if c.accuracy(figure) == sluice::Accuracy::Exact {
        1.0
    } else {
        0.0
    }
}

fn age_seconds(at: Option<chrono::DateTime<chrono::Utc>>) -> f64 {
    at.map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0).unwrap_or(0.0)
}

/// Reads the queue's gauges from the database and sets them on the
/// process's recorder.
pub async fn collect(pool: &PgPool) -> Result<(), sluice::Error> {
    let stats = sluice::queue_stats(pool, None, None).await?;
    gauge!(COUNT_CAP).set(stats.count_cap as f64);
    for c in &stats.consumers {
        let labels = [("stream", c.stream.clone()), ("consumer", c.consumer.clone())];
        gauge!(LAG_EVENTS, &labels).set(c.lag_events as f64);
        gauge!(LAG_EVENTS_EXACT, &labels).set(exact(c, sluice::Figure::LagEvents));
        gauge!(LAG_SECONDS, &labels).set(age_seconds(c.lag_oldest_at));
        gauge!(OLDEST_AVAILABLE, &labels).set(age_seconds(c.oldest_available_at));
        gauge!(PAUSED, &labels).set(if c.paused { 1.0 } else { 0.0 });
        gauge!(STREAM_EVENTS, "stream" => c.stream.clone()).set(c.events as f64);
        gauge!(STREAM_EVENTS_EXACT, "stream" => c.stream.clone()).set(exact(c, sluice::Figure::Events));
        for figure in sluice::Figure::TASK_STATES {
            let labels =
                [("stream", c.stream.clone()), ("consumer", c.consumer.clone()), ("state", figure.name().into())];
            gauge!(TASKS, &labels).set(c.count(figure) as f64);
            gauge!(TASKS_EXACT, &labels).set(exact(c, figure));
        }
        for (status, n) in [
            ("active", c.workers_active),
            ("idle", c.workers_idle),
            ("stopping", c.workers_stopping),
            ("gone", c.workers_gone),
        ] {
            gauge!(WORKERS, "stream" => c.stream.clone(), "consumer" => c.consumer.clone(), "status" => status)
                .set(n as f64);
        }
    }
    let horizon = stats.database.xmin_holder.as_ref().and_then(|h| h.age_seconds).unwrap_or(0.0);
    gauge!(sluice::metrics::XMIN_HORIZON_AGE).set(horizon.max(0.0));
    for (table, dead) in &stats.database.dead_rows {
        gauge!(DEAD_ROWS, "table" => table.clone()).set(*dead as f64);
    }
    Ok(())
}
