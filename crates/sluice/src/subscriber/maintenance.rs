//! Maintenance of the consumer, by one worker at a time (an advisory lock):
//! the scheduler (due scheduled tasks become available), the rescuer (tasks
//! of dead workers and of ended leases come back) and the cleaner
//! (completed tasks, dead letters and audit-log entries past their
//! retention). See `maintain.sql`.

use std::time::Duration;

use tracing::{debug, info};

use super::{timed, Shared, SubscriberEvent};
use crate::admin::ms_to_duration;
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

pub(crate) async fn run_once(shared: &Shared) -> Result<Maintained, sqlx::Error> {
    type Row = (i64, i64, i64, i64, i64, i64, bool, Option<i64>);
    let (promoted, expired, forgotten, purged, log_purged, _woken, more, next_due_ms): Row = timed(
        shared.db_timeout,
        "housekeeping",
        sqlx::query_as(sql::MAINTAIN).bind(shared.consumer_id).bind(BATCH).fetch_one(&shared.pool),
    )
    .await?;
    if expired > 0 || forgotten > 0 {
        info!(expired, forgotten, "freed tasks of lost leases and dead workers");
    }
    if promoted > 0 || purged > 0 || log_purged > 0 {
        debug!(promoted, purged, log_purged, "housekeeping");
    }
    shared.emit(SubscriberEvent::Maintained {
        promoted: promoted as u64,
        rescued: expired as u64,
        purged: purged as u64,
        log_purged: log_purged as u64,
    });
    Ok(Maintained { freed: promoted > 0 || expired > 0, more, next_due: next_due_ms.map(ms_to_duration) })
}
