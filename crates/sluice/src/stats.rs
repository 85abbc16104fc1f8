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
