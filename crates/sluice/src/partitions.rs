//! How `sluice.events` is cut into partitions, and the partitions there are.
//!
//! Events are partitioned by the id of the transaction that wrote them, and
//! retention drops whole partitions (docs/DESIGN.md, "Events and their
//! partitions"). A partition is closed to new transactions once it spans
//! [`EventPartitioning::span`] transaction ids, or once it has been written
//! into for the partition age ([`EventPartitioning::max_age`]), whichever
//! comes first; so events are dropped in good time on a quiet database too.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use crate::admin::{duration_ms, ms_to_duration};
use crate::error::{Error, InvalidInput};
use crate::pooler::on_pool;
use crate::sql;

/// How `sluice.events` is cut into partitions (one setting for the whole
/// database: the partitions are shared by every stream).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct EventPartitioning {
    /// How many transaction ids a partition spans at most.
    pub span: i64,
    /// How long a partition is written into at most: the partition new
    /// transactions write into is closed at the next transaction id once it
    /// has been written into for this long and holds an event. Never less,
    /// in effect, than a hundredth of the longest event retention of any
    /// stream, so that about a hundred partitions at most are within
    /// retention.
    pub max_age: Duration,
    /// How often the partitions' maintenance runs at most (every
    /// subscriber's housekeeping calls it; one session does the work).
    pub every: Duration,
}

impl EventPartitioning {
    /// The span of a new database: a million transaction ids.
    pub const SPAN_DEFAULT: i64 = 1_000_000;
    /// The largest span: a billion transaction ids.
    pub const SPAN_MAX: i64 = 1_000_000_000;
    /// The partition age of a new database: an hour.
    pub const MAX_AGE_DEFAULT: Duration = Duration::from_secs(3600);
    /// The shortest partition age: a second.
    pub const MAX_AGE_MIN: Duration = Duration::from_secs(1);
    /// How often the maintenance runs at most on a new database: every 5 s.
    pub const EVERY_DEFAULT: Duration = Duration::from_secs(5);
    /// The longest maintenance interval: an hour.
    pub const EVERY_MAX: Duration = Duration::from_secs(3600);
}

/// Changes to [`EventPartitioning`] for [`set_event_partitioning`]: what is
/// not given stays as it is.
///
/// ```
/// use std::time::Duration;
/// let change = sluice::PartitioningChange::default().max_age(Duration::from_secs(600));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitioningChange {
    span: Option<i64>,
    max_age: Option<Duration>,
    every: Option<Duration>,
}

impl PartitioningChange {
    /// Transaction ids a partition spans at most (1 to
    /// [`EventPartitioning::SPAN_MAX`]).
    pub fn span(mut self, span: i64) -> Self {
        self.span = Some(span);
        self
    }

    /// The partition age ([`EventPartitioning::max_age`]): from
    /// [`EventPartitioning::MAX_AGE_MIN`] to 100 years.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// How often the maintenance runs at most ([`EventPartitioning::every`]):
    /// zero (whenever a subscriber's housekeeping runs) to
    /// [`EventPartitioning::EVERY_MAX`].
    pub fn every(mut self, every: Duration) -> Self {
        self.every = Some(every);
        self
    }

    /// The changes as the database takes them: the span, and the durations
    /// in milliseconds.
    fn check(&self) -> Result<Checked, InvalidInput> {
        if let Some(span) = self.span {
            if !(1..=EventPartitioning::SPAN_MAX).contains(&span) {
                return Err(InvalidInput::Setting {
                    setting: "span",
                    reason: format!("{span} is outside 1..={} transaction ids", EventPartitioning::SPAN_MAX),
                });
            }
        }
        if let Some(age) = self.max_age {
            if age < EventPartitioning::MAX_AGE_MIN {
                return Err(InvalidInput::Setting {
                    setting: "max_age",
                    reason: format!("{age:?} is less than the shortest partition age, 1s"),
                });
            }
        }
        if let Some(every) = self.every {
            if every > EventPartitioning::EVERY_MAX {
                return Err(InvalidInput::Setting {
                    setting: "every",
                    reason: format!("{every:?} is more than the longest maintenance interval, 1h"),
                });
            }
        }
        Ok(Checked {
            span: self.span,
            max_age_ms: self.max_age.map(|d| duration_ms("max_age", d)).transpose()?,
            every_ms: self.every.map(|d| duration_ms("every", d)).transpose()?,
        })
    }
}

struct Checked {
    span: Option<i64>,
    max_age_ms: Option<i64>,
    every_ms: Option<i64>,
}

#[derive(FromRow)]
struct SettingsRow {
    span: i64,
    max_age_ms: i64,
    every_ms: i64,
}

impl From<SettingsRow> for EventPartitioning {
    fn from(r: SettingsRow) -> Self {
        EventPartitioning { span: r.span, max_age: ms_to_duration(r.max_age_ms), every: ms_to_duration(r.every_ms) }
    }
}

/// How `sluice.events` is cut into partitions now.
pub async fn event_partitioning(pool: &PgPool) -> Result<EventPartitioning, Error> {
    let row: SettingsRow =
        on_pool!(pool, sqlx::query_as(sql::EVENT_PARTITIONING_GET), fetch_one).await.map_err(Error::db)?;
    Ok(row.into())
}

/// How many times [`set_event_partitioning`] tries the maintenance, 100 ms
/// apart, while publishers hold the events' table.
const APPLY_TRIES: usize = 30;

/// Changes how `sluice.events` is cut into partitions, and applies it at
/// once to the partitions not yet written into: those made ahead are made
/// again with the new span, and the partition written into now is closed at
/// the next transaction id if it reaches further than the new span or is
/// older than the new age (transactions still running write their events
/// into it; new ones into the partitions after it). Returns the settings.
///
/// The change is applied by the partitions' maintenance, which waits at
/// most 100 ms for the events' table each time; it is tried for about 3 s,
/// and if publishers held the table all that time, the next housekeeping
/// run of a subscriber (or `sluice cleanup`) applies it.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// use std::time::Duration;
/// let change = sluice::PartitioningChange::default().max_age(Duration::from_secs(600));
/// let now = sluice::set_event_partitioning(&pool, change).await?;
/// assert_eq!(now.max_age, Duration::from_secs(600));
/// # Ok(()) }
/// ```
#[tracing::instrument(name = "sluice.set_event_partitioning", skip(pool))]
pub async fn set_event_partitioning(pool: &PgPool, change: PartitioningChange) -> Result<EventPartitioning, Error> {
    let Checked { span, max_age_ms, every_ms } = change.check()?;
    let row: SettingsRow = on_pool!(
        pool,
        sqlx::query_as(sql::EVENT_PARTITIONING_SET).bind(span).bind(max_age_ms).bind(every_ms),
        fetch_one
    )
    .await
    .map_err(Error::db)?;
    for _ in 0..APPLY_TRIES {
        on_pool!(pool, sqlx::query(sql::EVENT_PARTITIONS_DUE), execute).await.map_err(Error::db)?;
        on_pool!(pool, sqlx::query(sql::EVENT_PARTITIONS), execute).await.map_err(Error::db)?;
        let pending: bool =
            on_pool!(pool, sqlx::query_scalar(sql::EVENT_PARTITIONS_PENDING), fetch_one).await.map_err(Error::db)?;
        if !pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settings = EventPartitioning::from(row);
    tracing::info!(span = settings.span, max_age = ?settings.max_age, every = ?settings.every, "event partitioning set");
    Ok(settings)
}

/// Where a partition is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PartitionState {
    /// Made ahead: no transaction id of its range has been handed out yet.
    Ahead,
    /// New transactions write into it.
    Current,
    /// Closed to new transactions; some that began before may still write
    /// into it.
    Closing,
    /// No transaction can write into it any more: it goes once past
    /// retention and needed by nobody.
    Sealed,
    /// The kept events' partition: the events whose partition was dropped
    /// but that a dead letter or a cancelled task still names.
    Kept,
}

impl PartitionState {
    /// The state's name, as `sluice partitions list` prints it.
    pub fn name(self) -> &'static str {
        match self {
            PartitionState::Ahead => "ahead",
            PartitionState::Current => "current",
            PartitionState::Closing => "closing",
            PartitionState::Sealed => "sealed",
            PartitionState::Kept => "kept",
        }
    }
}

/// One partition of `sluice.events`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct EventPartition {
    /// The table's name in schema `sluice`.
    pub name: String,
    /// The first transaction id of its range.
    pub from_txid: i64,
    /// The transaction id after its range.
    pub to_txid: i64,
    /// Where it is in its life.
    pub state: PartitionState,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When the maintenance first found it written into.
    pub opened_at: Option<DateTime<Utc>>,
    /// When no transaction could write into it any more.
    pub sealed_at: Option<DateTime<Utc>>,
    /// Its size on disk, indexes included.
    pub bytes: i64,
}

#[derive(FromRow)]
struct PartitionRow {
    name: String,
    lo: i64,
    hi: i64,
    created_at: DateTime<Utc>,
    opened_at: Option<DateTime<Utc>>,
    sealed_at: Option<DateTime<Utc>>,
    kept: bool,
    open: bool,
    ahead: bool,
    bytes: i64,
}

/// The partitions of `sluice.events`, by transaction id.
pub async fn list_event_partitions(pool: &PgPool) -> Result<Vec<EventPartition>, Error> {
    let rows: Vec<PartitionRow> =
        on_pool!(pool, sqlx::query_as(sql::EVENT_PARTITIONS_LIST), fetch_all).await.map_err(Error::db)?;
    Ok(rows
        .into_iter()
        .map(|r| EventPartition {
            state: match (r.kept, r.sealed_at.is_some(), r.ahead, r.open) {
                (true, ..) => PartitionState::Kept,
                (_, true, ..) => PartitionState::Sealed,
                (_, _, true, _) => PartitionState::Ahead,
                (_, _, _, true) => PartitionState::Current,
                _ => PartitionState::Closing,
            },
            name: r.name,
            from_txid: r.lo,
            to_txid: r.hi,
            created_at: r.created_at,
            opened_at: r.opened_at,
            sealed_at: r.sealed_at,
            bytes: r.bytes,
        })
        .collect())
}
