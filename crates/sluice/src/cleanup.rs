//! Housekeeping by hand: what every subscriber's maintenance does on its
//! own (due tasks, lost leases, dead workers, retention, event partitions),
//! for a queue whose subscribers are stopped, or to see what it would do.

use sqlx::{FromRow, PgPool};

use crate::error::Error;
use crate::pooler::on_pool;
use crate::sql;

/// What housekeeping did (or, in a dry run, would do) for one consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow, serde::Serialize)]
#[non_exhaustive]
pub struct Cleanup {
    /// The stream.
    pub stream: String,
    /// The consumer.
    pub consumer: String,
    /// Scheduled tasks that fell due and became available.
    pub due: i64,
    /// Running tasks of dead workers or ended leases, freed (or dead-lettered
    /// on their last attempt).
    pub lost: i64,
    /// Workers silent past their liveness limit (forgotten once their tasks are freed).
    pub dead_workers: i64,
    /// Completed tasks and dead letters past their retention, removed.
    pub expired_tasks: i64,
    /// Audit-log entries past their retention, removed.
    pub expired_log: i64,
}

/// The whole of a housekeeping pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CleanupReport {
    /// Whether this was a dry run: nothing was changed.
    pub dry_run: bool,
    /// Per consumer, by stream and name.
    pub consumers: Vec<Cleanup>,
    /// Event partitions dropped past retention (or that would be); the kept
    /// events' partition is never among them.
    pub event_partitions_dropped: i64,
}

#[derive(FromRow)]
struct PreviewRow {
    stream: Option<String>,
    consumer: Option<String>,
    due: i64,
    lost: i64,
    dead_workers: i64,
    expired_tasks: i64,
    expired_log: i64,
    event_partitions: Option<i64>,
}

/// Runs the housekeeping every subscriber runs for its consumer, for every
/// consumer, until nothing is left to do; then the event partitions' maintenance
/// (the partition written into closed once past its span or age, partitions
/// sealed, made ahead, and dropped past retention, the events of dead
/// letters and cancelled tasks kept; see [`crate::set_event_partitioning`]).
/// With `dry_run`, counts what it would do and changes nothing.
///
/// Subscribers do this on their own: this is for a queue whose subscribers
/// are stopped (dead letters and logs past retention still go), or to see
/// what housekeeping is about to do.
#[tracing::instrument(name = "sluice.cleanup", skip(pool))]
pub async fn cleanup(pool: &PgPool, dry_run: bool) -> Result<CleanupReport, Error> {
    if dry_run {
        let rows: Vec<PreviewRow> =
            on_pool!(pool, sqlx::query_as(sql::CLEANUP_PREVIEW), fetch_all).await.map_err(Error::db)?;
        let mut report = CleanupReport { dry_run, ..CleanupReport::default() };
        for r in rows {
            match (r.stream, r.consumer) {
                (Some(stream), Some(consumer)) => report.consumers.push(Cleanup {
                    stream,
                    consumer,
                    due: r.due,
                    lost: r.lost,
                    dead_workers: r.dead_workers,
                    expired_tasks: r.expired_tasks,
                    expired_log: r.expired_log,
                }),
                _ => report.event_partitions_dropped = r.event_partitions.unwrap_or(0),
            }
        }
        return Ok(report);
    }
    let consumers: Vec<(i32, String, String)> =
        on_pool!(pool, sqlx::query_as(sql::CONSUMER_IDS), fetch_all).await.map_err(Error::db)?;
    let mut report = CleanupReport { dry_run, ..CleanupReport::default() };
    for (id, stream, consumer) in consumers {
        let mut done = Cleanup { stream, consumer, ..Cleanup::default() };
        loop {
            let run = crate::subscriber::housekeep(pool, id).await.map_err(Error::db)?;
            done.due += run.promoted;
            done.lost += run.expired;
            done.dead_workers += run.forgotten;
            done.expired_tasks += run.purged;
            done.expired_log += run.log_purged;
            if !run.more {
                break;
            }
        }
        report.consumers.push(done);
    }
    // By hand, the partitions are maintained whenever asked, not at most
    // every few seconds as the subscribers do.
    on_pool!(pool, sqlx::query(sql::EVENT_PARTITIONS_DUE), execute).await.map_err(Error::db)?;
    let (_created, dropped): (i32, i32) =
        on_pool!(pool, sqlx::query_as(sql::EVENT_PARTITIONS), fetch_one).await.map_err(Error::db)?;
    report.event_partitions_dropped = dropped.into();
    tracing::info!(consumers = report.consumers.len(), dropped, "housekeeping by hand");
    Ok(report)
}
