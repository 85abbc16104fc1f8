//! What the storage looks like: each of Sluice's tables with its rows, dead
//! rows and size. Dead rows pile up in the hot tables (tasks above all) when
//! autovacuum is off, behind, or held back by a long transaction; this is
//! where an operator sees it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use crate::error::Error;
use crate::pooler::on_pool;
use crate::sql;

/// One of Sluice's tables, from the server's statistics (estimates).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
#[non_exhaustive]
pub struct TableStats {
    /// The table, in schema `sluice`: `events`, `tasks`, `task_log`, …
    pub table_name: String,
    /// Live rows.
    pub live_rows: i64,
    /// Dead rows not yet vacuumed away.
    pub dead_rows: i64,
    /// Bytes on disk, with indexes and TOAST.
    pub total_bytes: i64,
    /// Bytes of its indexes.
    pub index_bytes: i64,
    /// When it was last vacuumed, by autovacuum or by hand.
    pub last_vacuum: Option<DateTime<Utc>>,
    /// When it was last analyzed, by autovacuum or by hand.
    pub last_analyze: Option<DateTime<Utc>>,
}

/// The state of Sluice's storage: its tables, and whether the server runs autovacuum.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageStats {
    /// Whether the server's `autovacuum` setting is on. Off, dead task rows
    /// are never removed and the claim slows down: see docs/OPERATIONS.md.
    pub autovacuum: bool,
    /// Each table, by name.
    pub tables: Vec<TableStats>,
}

impl StorageStats {
    /// The table of that name (`"tasks"`, `"events"`, …), if it exists.
    pub fn table(&self, name: &str) -> Option<&TableStats> {
        self.tables.iter().find(|t| t.table_name == name)
    }
}

#[derive(FromRow)]
struct Row {
    #[sqlx(flatten)]
    table: TableStats,
    autovacuum: bool,
}

/// Reads the storage statistics of Sluice's tables.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// let stats = sluice::storage_stats(&pool).await?;
/// if let Some(tasks) = stats.table("tasks") {
///     println!("tasks: {} live, {} dead, {} bytes", tasks.live_rows, tasks.dead_rows, tasks.total_bytes);
/// }
/// # Ok(()) }
/// ```
pub async fn storage_stats(pool: &PgPool) -> Result<StorageStats, Error> {
    let rows: Vec<Row> = on_pool!(pool, sqlx::query_as(sql::STORAGE_STATS), fetch_all).await.map_err(Error::db)?;
    if rows.is_empty() {
        return Err(Error::NotMigrated);
    }
    let autovacuum = rows.iter().all(|r| r.autovacuum);
    Ok(StorageStats { autovacuum, tables: rows.into_iter().map(|r| r.table).collect() })
}

/// How far [`queue_stats`] counts: a count below it is exact; one that
/// reaches it stops there (10,000 index entries read, a few milliseconds)
/// and is reported as [`Accuracy::Estimated`] or [`Accuracy::AtLeast`].
/// This keeps `sluice stats`, a `/metrics` scrape and a dashboard refresh
/// at a bounded cost whatever the backlog (docs/DESIGN.md, "The queue's
/// figures").
pub const STATS_COUNT_CAP: i64 = 10_000;

/// A count of [`ConsumerStats`] that may be inexact past [`STATS_COUNT_CAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Figure {
    /// [`ConsumerStats::events`].
    Events,
    /// [`ConsumerStats::lag_events`].
    LagEvents,
    /// [`ConsumerStats::scheduled`].
    Scheduled,
    /// [`ConsumerStats::waiting`].
    Waiting,
    /// [`ConsumerStats::available`].
    Available,
    /// [`ConsumerStats::running`].
    Running,
    /// [`ConsumerStats::completed`].
    Completed,
    /// [`ConsumerStats::discarded`].
    Discarded,
    /// [`ConsumerStats::cancelled`].
    Cancelled,
}

impl Figure {
    /// The tasks of a consumer by state, in the order `sluice stats` shows them.
    pub const TASK_STATES: [Figure; 7] = [
        Figure::Scheduled,
        Figure::Waiting,
        Figure::Available,
        Figure::Running,
        Figure::Completed,
        Figure::Discarded,
        Figure::Cancelled,
    ];

    /// Its name: the field of [`ConsumerStats`] (`"lag_events"`), or the
    /// task state (`"available"`).
    pub fn name(self) -> &'static str {
        match self {
            Figure::Events => "events",
            Figure::LagEvents => "lag_events",
            Figure::Scheduled => "scheduled",
            Figure::Waiting => "waiting",
            Figure::Available => "available",
            Figure::Running => "running",
            Figure::Completed => "completed",
            Figure::Discarded => "discarded",
            Figure::Cancelled => "cancelled",
        }
    }
}

/// How a count of [`ConsumerStats`] was come by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Accuracy {
    /// Counted, every one: it was below [`STATS_COUNT_CAP`].
    Exact,
    /// Counting stopped at the cap and the server has no estimate to give
    /// (the table was never analyzed, or its statistics are too old to
    /// agree): the figure is a lower bound.
    AtLeast,
    /// Counting stopped at the cap; the figure is the query planner's
    /// estimate (as fresh as the table's last ANALYZE, scaled to its
    /// current size), never below what was counted.
    Estimated,
}

impl Accuracy {
    /// How `sluice stats` and the dashboard mark a figure: `""` (exact),
    /// `"≥"` (at least) or `"≈"` (estimated).
    pub fn mark(self) -> &'static str {
        match self {
            Accuracy::Exact => "",
            Accuracy::AtLeast => "≥",
            Accuracy::Estimated => "≈",
        }
    }
}

/// One consumer as `sluice stats` shows it: its stream's events, its lag,
/// its tasks by state and its workers, read in one statement
/// (consumer_stats.sql). Each count is exact below [`STATS_COUNT_CAP`];
/// the ones that reached it are listed in [`inexact`](Self::inexact).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// The stream.
    pub stream: String,
    /// The consumer.
    pub consumer: String,
    /// Whether claiming is paused.
    pub paused: bool,
    /// Events the stream holds (all consumers'; retention removes old ones).
    pub events: i64,
    /// When the stream's newest event was published (the last event of
    /// the newest transaction).
    pub last_event_at: Option<DateTime<Utc>>,
    /// Matching events its position has not passed: published (and
    /// committed) but not yet made into tasks. Subscribers make them into
    /// tasks as they fetch; a lag that grows means none is running, or
    /// they cannot keep up. Past the cap, the matching share of the first
    /// [`STATS_COUNT_CAP`] events read, applied to the estimate of the events
    /// past the position.
    pub lag_events: i64,
    /// When the oldest of those was published (of the events read, the
    /// oldest transactions first).
    pub lag_oldest_at: Option<DateTime<Utc>>,
    /// Tasks waiting for their time (deliver_at, a deferral, a retry).
    pub scheduled: i64,
    /// Tasks waiting for an earlier task of their key (a consumer ordered by key).
    pub waiting: i64,
    /// Tasks ready to be claimed.
    pub available: i64,
    /// Tasks claimed by a worker.
    pub running: i64,
    /// Acked tasks kept by the consumer's completed retention.
    pub completed: i64,
    /// Dead letters.
    pub discarded: i64,
    /// Cancelled tasks.
    pub cancelled: i64,
    /// When the oldest available task was made: how long the queue's head
    /// waits. Past the cap, the oldest of those read and of the head of
    /// each priority.
    pub oldest_available_at: Option<DateTime<Utc>>,
    /// Tasks completed in about the last minute, by the live workers.
    pub completed_last_minute: i64,
    /// Attempts failed in about the last minute, by the live workers.
    pub failed_last_minute: i64,
    /// Workers with tasks in hand.
    pub workers_active: i64,
    /// Workers waiting for work.
    pub workers_idle: i64,
    /// Workers shutting down.
    pub workers_stopping: i64,
    /// Workers silent past their liveness limit; housekeeping frees their
    /// tasks and forgets them.
    pub workers_gone: i64,
    /// The counts above that are not exact, with how each was come by;
    /// every count not listed is exact. In JSON, an object such as
    /// `{"available": "estimated", "lag_events": "at_least"}`.
    pub inexact: BTreeMap<Figure, Accuracy>,
}

impl ConsumerStats {
    /// The count `figure` names.
    pub fn count(&self, figure: Figure) -> i64 {
        match figure {
            Figure::Events => self.events,
            Figure::LagEvents => self.lag_events,
            Figure::Scheduled => self.scheduled,
            Figure::Waiting => self.waiting,
            Figure::Available => self.available,
            Figure::Running => self.running,
            Figure::Completed => self.completed,
            Figure::Discarded => self.discarded,
            Figure::Cancelled => self.cancelled,
        }
    }

    /// How the count `figure` names was come by.
    pub fn accuracy(&self, figure: Figure) -> Accuracy {
        self.inexact.get(&figure).copied().unwrap_or(Accuracy::Exact)
    }
}

/// A row of consumer_stats.sql: each count as read (at most the cap) with
/// the planner's estimate when it reached the cap.
#[derive(FromRow)]
struct StatsRow {
    stream: String,
    consumer: String,
    paused: bool,
    events: i64,
    events_estimate: Option<i64>,
    last_event_at: Option<DateTime<Utc>>,
    lag_events: i64,
    lag_capped: bool,
    lag_estimate: Option<i64>,
    lag_oldest_at: Option<DateTime<Utc>>,
    scheduled: i64,
    scheduled_estimate: Option<i64>,
    waiting: i64,
    waiting_estimate: Option<i64>,
    available: i64,
    available_estimate: Option<i64>,
    running: i64,
    running_estimate: Option<i64>,
    completed: i64,
    completed_estimate: Option<i64>,
    discarded: i64,
    discarded_estimate: Option<i64>,
    cancelled: i64,
    cancelled_estimate: Option<i64>,
    oldest_available_at: Option<DateTime<Utc>>,
    completed_last_minute: i64,
    failed_last_minute: i64,
    workers_active: i64,
    workers_idle: i64,
    workers_stopping: i64,
    workers_gone: i64,
}

/// A count that read `counted` rows and stopped (`capped`), with the
/// planner's `estimate`: what is reported, and how it was come by. An
/// estimate below what was counted contradicts the count (statistics
/// older than the backlog), so it is not used.
fn figure(counted: i64, capped: bool, estimate: Option<i64>) -> (i64, Accuracy) {
    match (capped, estimate) {
        (false, _) => (counted, Accuracy::Exact),
        (true, Some(estimate)) if estimate >= counted => (estimate, Accuracy::Estimated),
        (true, _) => (counted, Accuracy::AtLeast),
    }
}

impl StatsRow {
    fn into_stats(self, cap: i64) -> ConsumerStats {
        let mut inexact = BTreeMap::new();
        let mut count = |f: Figure, counted: i64, capped: bool, estimate: Option<i64>| {
            let (n, accuracy) = figure(counted, capped, estimate);
            if accuracy != Accuracy::Exact {
                inexact.insert(f, accuracy);
            }
            n
        };
        let events = count(Figure::Events, self.events, self.events >= cap, self.events_estimate);
        let lag_events = count(Figure::LagEvents, self.lag_events, self.lag_capped, self.lag_estimate);
        let scheduled = count(Figure::Scheduled, self.scheduled, self.scheduled >= cap, self.scheduled_estimate);
        let waiting = count(Figure::Waiting, self.waiting, self.waiting >= cap, self.waiting_estimate);
        let available = count(Figure::Available, self.available, self.available >= cap, self.available_estimate);
        let running = count(Figure::Running, self.running, self.running >= cap, self.running_estimate);
        let completed = count(Figure::Completed, self.completed, self.completed >= cap, self.completed_estimate);
        let discarded = count(Figure::Discarded, self.discarded, self.discarded >= cap, self.discarded_estimate);
        let cancelled = count(Figure::Cancelled, self.cancelled, self.cancelled >= cap, self.cancelled_estimate);
        ConsumerStats {
            stream: self.stream,
            consumer: self.consumer,
            paused: self.paused,
            events,
            last_event_at: self.last_event_at,
            lag_events,
            lag_oldest_at: self.lag_oldest_at,
            scheduled,
            waiting,
            available,
            running,
            completed,
            discarded,
            cancelled,
            oldest_available_at: self.oldest_available_at,
            completed_last_minute: self.completed_last_minute,
            failed_last_minute: self.failed_last_minute,
            workers_active: self.workers_active,
            workers_idle: self.workers_idle,
            workers_stopping: self.workers_stopping,
            workers_gone: self.workers_gone,
            inexact,
        }
    }
}

/// The oldest holder of the server's xmin horizon: the transaction (or
/// prepared transaction, or replication slot) that keeps vacuum from
/// removing dead rows, in Sluice's tables and every other.
#[derive(Debug, Clone, PartialEq, FromRow, serde::Serialize)]
#[non_exhaustive]
pub struct XminHolder {
    /// `session`, `prepared transaction` or `replication slot`.
    pub kind: String,
    /// The session's process id (a slot's active sender, if any).
    pub pid: Option<i32>,
    /// The session's `application_name` (a prepared transaction's gid, a slot's name).
    pub application: Option<String>,
    /// The session's state: `active`, `idle in transaction`, …
    pub state: Option<String>,
    /// The database it is connected to.
    pub database: Option<String>,
    /// When its current (or last) query started.
    pub query_start: Option<DateTime<Utc>>,
    /// When its transaction started (unknown for a replication slot).
    pub since: Option<DateTime<Utc>>,
    /// How long ago that was, in seconds.
    pub age_seconds: Option<f64>,
    /// How many transaction ids old its horizon is.
    pub xid_age: Option<i64>,
}

/// The server's health as a queue sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct DatabaseHealth {
    /// What holds the xmin horizon back, when anything other than the
    /// reading session holds a snapshot.
    pub xmin_holder: Option<XminHolder>,
    /// Whether autovacuum is on.
    pub autovacuum: bool,
    /// Dead rows of Sluice's tables, by table.
    pub dead_rows: Vec<(String, i64)>,
}

/// Everything `sluice stats` shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// Each consumer selected, by stream and name.
    pub consumers: Vec<ConsumerStats>,
    /// How far each count was counted: [`STATS_COUNT_CAP`].
    pub count_cap: i64,
    /// The server's health.
    pub database: DatabaseHealth,
}

/// The consumers of `stream` (all streams' when `None`; only `consumer` when
/// given) with their lag, tasks and workers, and the database's health: the
/// session holding back vacuum and the dead rows of Sluice's tables.
///
/// Its cost is bounded whatever the backlog: each count reads at most
/// [`STATS_COUNT_CAP`] index entries, and one that reaches the cap is
/// estimated (or given as a lower bound): see [`ConsumerStats::inexact`].
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// let stats = sluice::queue_stats(&pool, Some("orders"), None).await?;
/// for c in &stats.consumers {
///     let available = c.accuracy(sluice::Figure::Available).mark();
///     println!("{}: {} events behind, {available}{} available, {} dead", c.consumer, c.lag_events, c.available, c.discarded);
/// }
/// if let Some(holder) = &stats.database.xmin_holder {
///     println!("vacuum held back by pid {:?} ({:?}) for {:?} s", holder.pid, holder.application, holder.age_seconds);
/// }
/// # Ok(()) }
/// ```
#[tracing::instrument(name = "sluice.queue_stats", level = "debug", skip(pool))]
pub async fn queue_stats(pool: &PgPool, stream: Option<&str>, consumer: Option<&str>) -> Result<QueueStats, Error> {
    if let Some(stream) = stream {
        match consumer {
            Some(consumer) => drop(crate::admin::get_consumer(pool, stream, consumer).await?),
            None => drop(crate::admin::get_stream(pool, stream).await?),
        }
    }
    let cap = STATS_COUNT_CAP;
    // Unnamed statements: a transaction-mode pooler may run the next
    // transaction on another server connection.
    let mut tx = pool.begin().await.map_err(Error::db)?;
    sqlx::query(sql::STATS_SETTINGS).persistent(false).execute(&mut *tx).await.map_err(Error::db)?;
    let rows: Vec<StatsRow> = sqlx::query_as(sql::CONSUMER_STATS)
        .bind(stream)
        .bind(consumer)
        .bind(cap)
        .persistent(false)
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::db)?;
    tx.commit().await.map_err(Error::db)?;
    let consumers = rows.into_iter().map(|r| r.into_stats(cap)).collect();
    let database = database_health(pool).await?;
    Ok(QueueStats { consumers, count_cap: cap, database })
}

/// One minute of [`throughput`].
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Minute {
    /// The minute's start.
    #[sqlx(rename = "minute")]
    pub at: DateTime<Utc>,
    /// Tasks completed in it.
    pub completed: i64,
    /// Attempts that failed in it (retried or dead-lettered).
    pub failed: i64,
}

/// How many minutes of history [`throughput`] keeps: a day.
pub const THROUGHPUT_KEPT_MINUTES: u32 = 24 * 60;

/// Tasks completed and attempts failed per minute over the last `minutes`
/// minutes (this one included), oldest first, one entry per minute: of
/// `consumer` of `stream`, of every consumer of `stream` when `consumer` is
/// `None`, of every consumer when both are.
///
/// Each worker adds what it did since its previous heartbeat to the minute
/// it beats in, and its last figures when it stops: the current minute
/// fills up as heartbeats come, and a worker that dies takes what it did
/// since its last beat with it. Kept for [`THROUGHPUT_KEPT_MINUTES`].
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// let hour = sluice::throughput(&pool, Some("orders"), Some("billing"), 60).await?;
/// let done: i64 = hour.iter().map(|m| m.completed).sum();
/// println!("{done} tasks completed in the last hour");
/// # Ok(()) }
/// ```
#[tracing::instrument(name = "sluice.throughput", level = "debug", skip(pool))]
pub async fn throughput(
    pool: &PgPool,
    stream: Option<&str>,
    consumer: Option<&str>,
    minutes: u32,
) -> Result<Vec<Minute>, Error> {
    if !(1..=THROUGHPUT_KEPT_MINUTES).contains(&minutes) {
        return Err(crate::InvalidInput::Setting {
            setting: "minutes",
            reason: format!("{minutes} is outside 1..={THROUGHPUT_KEPT_MINUTES} (the history kept)"),
        }
        .into());
    }
    match (stream, consumer) {
        (Some(stream), Some(consumer)) => drop(crate::admin::get_consumer(pool, stream, consumer).await?),
        (Some(stream), None) => drop(crate::admin::get_stream(pool, stream).await?),
        (None, Some(_)) => {
            return Err(crate::InvalidInput::Setting {
                setting: "consumer",
                reason: "a consumer is named within its stream: give the stream too".to_string(),
            }
            .into())
        }
        (None, None) => {}
    }
    on_pool!(pool, sqlx::query_as(sql::THROUGHPUT).bind(stream).bind(consumer).bind(minutes as i32), fetch_all)
        .await
        .map_err(Error::db)
}

/// The server's health for a queue: the xmin horizon's holder, autovacuum,
/// and the dead rows of Sluice's tables.
pub async fn database_health(pool: &PgPool) -> Result<DatabaseHealth, Error> {
    let xmin_holder: Option<XminHolder> =
        on_pool!(pool, sqlx::query_as(sql::XMIN_HORIZON), fetch_optional).await.map_err(Error::db)?;
    let storage = storage_stats(pool).await?;
    Ok(DatabaseHealth {
        xmin_holder,
        autovacuum: storage.autovacuum,
        dead_rows: storage.tables.into_iter().map(|t| (t.table_name, t.dead_rows)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::{figure, Accuracy};

    #[test]
    fn a_count_that_reached_the_cap_is_estimated_only_when_the_estimate_agrees() {
        assert_eq!(figure(3, false, None), (3, Accuracy::Exact));
        assert_eq!(figure(10_000, true, Some(9_999_016)), (9_999_016, Accuracy::Estimated));
        // No statistics, or statistics older than the backlog: a lower bound.
        assert_eq!(figure(10_000, true, None), (10_000, Accuracy::AtLeast));
        assert_eq!(figure(10_000, true, Some(250)), (10_000, Accuracy::AtLeast));
    }
}
