//! The fetcher: one round trip that moves the consumer's position forward
//! and claims tasks for this worker (`sluice.fetch_v2`, see
//! `migrations/functions/fetch_v2.sql`).

use chrono::{DateTime, Utc};

use super::{timed, Shared};
use crate::error::Error;
use crate::pooler::on_pool;
use crate::sql;

/// One claimed task with its event.
pub(crate) struct ClaimedTask {
    pub(crate) event_id: i64,
    pub(crate) lease_token: i64,
    pub(crate) attempt: i32,
    pub(crate) priority: i16,
    pub(crate) subject: String,
    pub(crate) payload: String,
    pub(crate) metadata: String,
    pub(crate) key: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
}

impl ClaimedTask {
    pub(crate) fn key(&self) -> super::registry::Key {
        (self.event_id, self.lease_token)
    }
}

pub(crate) struct Fetched {
    /// The window was cut: more events wait to be materialized.
    pub(crate) more: bool,
    /// The consumer's row stayed locked past the refill's lock_timeout
    /// (an operator's open transaction, say): nothing was fetched.
    pub(crate) busy: bool,
    pub(crate) materialized: usize,
    /// In claim order: priority, then queue position.
    pub(crate) tasks: Vec<ClaimedTask>,
}

/// Why a fetch failed.
pub(crate) enum FetchError {
    /// The subscriber cannot go on: its consumer is gone, or its position
    /// belongs to another cluster.
    Stop(Error),
    /// Try again later.
    Db(sqlx::Error),
}

/// One row of fetch.sql, by position (no lookup of column names per row):
/// materialized, more, busy, then event_id, lease_token, attempt, priority,
/// position, subject, payload, metadata, key, created_at.
type FetchRow = (
    Option<i32>,
    Option<bool>,
    Option<bool>,
    Option<i64>,
    Option<i64>,
    Option<i32>,
    Option<i16>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
);

/// What one fetch asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    pub(crate) tasks: usize,
    pub(crate) chunk: i32,
    pub(crate) max_bytes: i64,
    pub(crate) refill: bool,
}

#[tracing::instrument(
    name = "sluice.fetch",
    level = "debug",
    skip_all,
    fields(asked = ask.tasks, refill = ask.refill, claimed = tracing::field::Empty)
)]
pub(crate) async fn fetch(shared: &Shared, ask: Ask) -> Result<Fetched, FetchError> {
    let started = std::time::Instant::now();
    let rows: Result<Vec<FetchRow>, sqlx::Error> = timed(
        shared.db_timeout,
        "fetching tasks",
        on_pool!(
            &shared.pool,
            sqlx::query_as(sql::FETCH)
                .bind(shared.consumer_id)
                .bind(shared.worker_id)
                .bind(shared.lease_ms)
                .bind(ask.tasks as i32)
                .bind(ask.chunk)
                .bind(ask.refill)
                .bind(ask.max_bytes),
            fetch_all
        ),
    )
    .await;
    shared.metrics.fetch.record(started.elapsed().as_secs_f64());
    let rows = match rows {
        Ok(rows) => rows,
        // lock_not_available: the refill waited its lock_timeout for the
        // consumer's row. Refills of other subscribers hold it for a few
        // milliseconds each; this long, something else holds it.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03") => {
            tracing::debug!("the consumer's row stayed locked; fetching again shortly");
            return Ok(Fetched { more: false, busy: true, materialized: 0, tasks: Vec::new() });
        }
        Err(e) => return Err(classify(shared, e)),
    };

    let mut rows = rows.into_iter();
    let (materialized, more, busy, ..) = rows.next().ok_or_else(|| FetchError::Db(sqlx::Error::RowNotFound))?;
    let mut tasks: Vec<(i64, ClaimedTask)> = rows
        .filter_map(
            |(
                _,
                _,
                _,
                event_id,
                lease_token,
                attempt,
                priority,
                position,
                subject,
                payload,
                metadata,
                key,
                created_at,
            )| {
                let task = ClaimedTask {
                    event_id: event_id?,
                    lease_token: lease_token?,
                    attempt: attempt?,
                    priority: priority?,
                    subject: subject?,
                    payload: payload.unwrap_or_else(|| "null".into()),
                    metadata: metadata.unwrap_or_else(|| "{}".into()),
                    key,
                    created_at: created_at?,
                };
                Some((position?, task))
            },
        )
        .collect();
    tasks.sort_by_key(|(position, t)| (std::cmp::Reverse(t.priority), *position));
    let fetched = Fetched {
        more: more.unwrap_or(false),
        busy: busy.unwrap_or(false),
        materialized: materialized.unwrap_or(0).max(0) as usize,
        tasks: tasks.into_iter().map(|(_, t)| t).collect(),
    };
    shared.metrics.claimed.increment(fetched.tasks.len() as u64);
    tracing::Span::current().record("claimed", fetched.tasks.len());
    tracing::trace!(
        asked = ask.tasks,
        claimed = fetched.tasks.len(),
        materialized = fetched.materialized,
        more = fetched.more,
        busy = fetched.busy,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "fetched"
    );
    Ok(fetched)
}

fn classify(shared: &Shared, e: sqlx::Error) -> FetchError {
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            // no_data_found: the consumer (or its stream) was deleted.
            Some("P0002") => {
                return FetchError::Stop(Error::ConsumerNotFound {
                    stream: shared.stream.clone(),
                    consumer: shared.consumer.clone(),
                })
            }
            Some("SL001") => {
                return FetchError::Stop(Error::PositionAhead {
                    stream: shared.stream.clone(),
                    consumer: shared.consumer.clone(),
                })
            }
            _ => {}
        }
    }
    FetchError::Db(e)
}
