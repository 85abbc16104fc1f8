//! The keeper: the worker's heartbeat, its only proof of life. A live
//! worker keeps every task it holds without rewriting their rows (so a
//! handler's transaction at any isolation level can settle its task); a
//! worker silent for longer than its own `dead_after` loses them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::rates::LastMinute;
use super::{hostname, timed, ErrorBackoff, Shared, SubscriberEvent};
use crate::pooler::on_pool;
use crate::sql;

/// Registers (or revives) this worker's row, with its own liveness limit.
pub(crate) async fn register(shared: &Shared) -> Result<(), sqlx::Error> {
    timed(
        shared.db_timeout,
        "registering the worker",
        on_pool!(
            &shared.pool,
            sqlx::query(sql::WORKER_REGISTER)
                .bind(shared.worker_id)
                .bind(shared.consumer_id)
                .bind(hostname())
                .bind(std::process::id() as i32)
                .bind(shared.dead_after.as_millis() as i64),
            execute
        ),
    )
    .await
    .map(|_| ())
}

/// How many tasks this worker still holds in the database.
pub(crate) async fn held(shared: &Shared) -> Result<i64, sqlx::Error> {
    timed(
        shared.db_timeout,
        "counting the worker's tasks",
        on_pool!(
            &shared.pool,
            sqlx::query_scalar(sql::WORKER_HELD).bind(shared.consumer_id).bind(shared.worker_id),
            fetch_one
        ),
    )
    .await
}

/// Removes this worker's row: its remaining tasks are freed once their leases end.
/// What it did since its last heartbeat goes into the throughput history.
pub(crate) async fn unregister(shared: &Shared) -> Result<(), sqlx::Error> {
    let unreported = shared.metrics.rates.unreported();
    timed(
        shared.db_timeout,
        "unregistering the worker",
        on_pool!(
            &shared.pool,
            sqlx::query(sql::WORKER_UNREGISTER)
                .bind(shared.worker_id)
                .bind(shared.consumer_id)
                .bind(unreported.0)
                .bind(unreported.1),
            execute
        ),
    )
    .await?;
    shared.metrics.rates.reported(unreported);
    Ok(())
}

/// Beats every `every` until stopped.
pub(crate) async fn run(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    let mut errors = ErrorBackoff::new();
    let mut last_minute = LastMinute::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match beat(&shared, &mut last_minute).await {
            Ok(()) => errors.reset(),
            Err(e) => {
                // Keep trying: past dead_after, other workers free our tasks
                // and our acks are refused, which is what should happen.
                let wait = errors.next().min(every);
                warn!(error = %e, retry_in = ?wait, "heartbeat failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

async fn beat(shared: &Shared, last_minute: &mut LastMinute) -> Result<(), sqlx::Error> {
    let (completed, failed) = last_minute.observe(&shared.metrics.rates, std::time::Instant::now());
    let unreported = shared.metrics.rates.unreported();
    let tokens = shared.registry.tokens();
    let status = if shared.stopping.load(Ordering::Relaxed) {
        "stopping"
    } else if tokens.is_empty() {
        "idle"
    } else {
        "active"
    };
    let (registered, returned): (i64, i64) = timed(
        shared.db_timeout,
        "heartbeat",
        on_pool!(
            &shared.pool,
            sqlx::query_as(sql::HEARTBEAT)
                // Planned for each call's own array, as the ack is (see ack_tasks).
                .persistent(false)
                .bind(shared.worker_id)
                .bind(shared.consumer_id)
                .bind(status)
                .bind(&tokens)
                .bind(shared.db_timeout.as_millis() as i64)
                .bind(completed)
                .bind(failed)
                .bind(unreported.0)
                .bind(unreported.1),
            fetch_one
        ),
    )
    .await?;
    shared.metrics.rates.reported(unreported);
    if returned > 0 {
        debug!(returned, "handed back tasks under this worker's name that it no longer holds");
    }
    if registered == 0 {
        // Another subscriber took us for dead and forgot us; come back.
        warn!("worker row missing (heartbeat was late); registering again");
        register(shared).await?;
    }
    shared.emit(SubscriberEvent::Heartbeat);
    Ok(())
}
