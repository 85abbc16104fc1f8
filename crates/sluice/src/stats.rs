//! What the storage looks like: each of Sluice's tables with its rows, dead
//! rows and size. Dead rows pile up in the hot tables (tasks above all) when
//! autovacuum is off, behind, or held back by a long transaction; this is
//! where an operator sees it.

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

/// One consumer as `sluice stats` shows it: its stream's events, its lag,
/// its tasks by state and its workers. Counts are exact, read in one
/// statement (consumer_stats.sql).
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
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
    /// When the stream's newest event was published.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Matching events its position has not passed: published (and
    /// committed) but not yet made into tasks. Subscribers make them into
    /// tasks as they fetch; a lag that grows means none is running, or
    /// they cannot keep up.
    pub lag_events: i64,
    /// When the oldest of those was published.
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
    /// When the oldest available task was made: how long the queue's head waits.
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
    /// The server's health.
    pub database: DatabaseHealth,
}

/// The consumers of `stream` (all streams' when `None`; only `consumer` when
/// given) with their lag, tasks and workers, and the database's health: the
/// session holding back vacuum and the dead rows of Sluice's tables.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// let stats = sluice::queue_stats(&pool, Some("orders"), None).await?;
/// for c in &stats.consumers {
///     println!("{}: {} events behind, {} available, {} dead", c.consumer, c.lag_events, c.available, c.discarded);
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
    let consumers: Vec<ConsumerStats> =
        on_pool!(pool, sqlx::query_as(sql::CONSUMER_STATS).bind(stream).bind(consumer), fetch_all)
            .await
            .map_err(Error::db)?;
    let database = database_health(pool).await?;
    Ok(QueueStats { consumers, database })
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
