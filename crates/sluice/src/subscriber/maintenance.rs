//! Maintenance of the consumer, by one worker at a time (an advisory lock):
//! the scheduler (due scheduled tasks become available), the rescuer (tasks
//! of dead workers and of ended leases come back) and the cleaner
//! (completed tasks, dead letters and audit-log entries past their
//! retention), see `maintain.sql`; and the events' partitions, created ahead
//! and dropped past retention (`maintain_event_partitions`).

use std::time::Duration;

use tracing::{debug, info};

use super::{timed, Shared, SubscriberEvent};
use crate::admin::ms_to_duration;
use crate::pooler::on_pool;
use crate::sql;

/// Rows one run touches at most per step.
pub(crate) const BATCH: i64 = 1_000;

pub(crate) struct Maintained {
    /// Tasks became available.
    pub(crate) freed: bool,
    /// A step filled its batch: run again at once.
    pub(crate) more: bool,
    /// How long until the next scheduled task is due, by the database's clock.
    pub(crate) next_due: Option<Duration>,
}

/// What one run of maintain.sql did for a consumer.
#[derive(sqlx::FromRow)]
pub(crate) struct Housekept {
    pub(crate) promoted: i64,
    pub(crate) expired: i64,
    /// Of the expired, the ones on their last attempt: dead letters.
    pub(crate) expired_discarded: i64,
    pub(crate) forgotten: i64,
    pub(crate) purged: i64,
    pub(crate) log_purged: i64,
    pub(crate) more: bool,
    pub(crate) next_due_ms: Option<i64>,
}

/// One run of maintain.sql for consumer `consumer_id` (also `sluice cleanup`'s).
pub(crate) async fn housekeep(pool: &sqlx::PgPool, consumer_id: i32) -> Result<Housekept, sqlx::Error> {
    on_pool!(pool, sqlx::query_as(sql::MAINTAIN).bind(consumer_id).bind(BATCH), fetch_one).await
}

pub(crate) async fn run_once(shared: &Shared) -> Result<Maintained, sqlx::Error> {
    let Housekept { promoted, expired, expired_discarded, forgotten, purged, log_purged, more, next_due_ms } =
        timed(shared.db_timeout, "housekeeping", housekeep(&shared.pool, shared.consumer_id)).await?;
    shared.metrics.rescued.increment((expired - expired_discarded) as u64);
    shared.metrics.dead_lettered.increment(expired_discarded as u64);
    if expired > 0 || forgotten > 0 {
        info!(expired, forgotten, "freed tasks of lost leases and dead workers");
    }
    if promoted > 0 || purged > 0 || log_purged > 0 {
        debug!(promoted, purged, log_purged, "housekeeping");
    }
    // The events' partitions are the whole database's, not the consumer's:
    // the function runs every few seconds at most, one session at a time.
    // Its failure is logged and tried again at the next run: it must not
    // cost the consumer's own housekeeping (the wake-up for due tasks).
    let partitions: Result<(i32, i32), sqlx::Error> = timed(
        shared.db_timeout,
        "maintaining event partitions",
        on_pool!(&shared.pool, sqlx::query_as(sql::EVENT_PARTITIONS), fetch_one),
    )
    .await;
    match partitions {
        Ok((created, dropped)) if created > 0 || dropped > 0 => {
            info!(created, dropped, "event partitions created ahead and dropped past retention");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "maintaining event partitions failed; trying again at the next run"),
    }
    shared.emit(SubscriberEvent::Maintained {
        promoted: promoted as u64,
        rescued: expired as u64,
        purged: purged as u64,
        log_purged: log_purged as u64,
    });
    Ok(Maintained { freed: promoted > 0 || expired > 0, more, next_due: next_due_ms.map(ms_to_duration) })
}
