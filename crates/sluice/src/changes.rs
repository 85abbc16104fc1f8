//! Watching the queue change: one LISTEN connection on every stream's
//! channel, for a dashboard or a monitor that would rather be told than poll.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::error::Error;
use crate::pooler::on_pool;
use crate::sql;

/// How often [`Changes`] looks for streams created since it started.
pub const NEW_STREAMS_EVERY: Duration = Duration::from_secs(30);

/// What wakes subscribers, for a watcher: events published (once a
/// publishing transaction commits), tasks retried by hand, consumers resumed
/// or reset, scheduled tasks falling due, tasks released by a stopping or
/// dead worker. Acks, nacks and defers do not notify: a watcher that shows
/// task counts refreshes on a timer too.
///
/// Notifications carry no data; several close together arrive as one
/// [`Changes::next`] (they are drained, so a watcher is not woken once per
/// event of a batch). One dedicated connection, not from the pool; LISTEN
/// does not work through a pooler in transaction mode.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// let mut changes = sluice::watch(&pool).await?;
/// loop {
///     changes.next().await?;
///     println!("the queue changed");
/// }
/// # }
/// ```
pub struct Changes {
    pool: PgPool,
    listener: PgListener,
    streams: HashSet<i32>,
    look_again_at: Instant,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").field("streams", &self.streams.len()).finish_non_exhaustive()
    }
}

/// Starts watching every stream of the queue (and each stream created
/// later, within [`NEW_STREAMS_EVERY`]).
pub async fn watch(pool: &PgPool) -> Result<Changes, Error> {
    let listener = PgListener::connect_with(pool).await.map_err(Error::db)?;
    let mut changes = Changes { pool: pool.clone(), listener, streams: HashSet::new(), look_again_at: Instant::now() };
    changes.listen_to_new_streams().await?;
    Ok(changes)
}

impl Changes {
    /// Waits until something changed: a notification on any stream's
    /// channel, or a lost connection (notifications may have been missed
    /// while it was down; it reconnects on the next call). Errors are those
    /// of reconnecting; calling again retries.
    pub async fn next(&mut self) -> Result<(), Error> {
        loop {
            tokio::select! {
                received = self.listener.try_recv() => {
                    received.map_err(Error::db)?;
                    while self.listener.next_buffered().is_some() {}
                    return Ok(());
                }
                _ = tokio::time::sleep_until(self.look_again_at) => self.listen_to_new_streams().await?,
            }
        }
    }

    async fn listen_to_new_streams(&mut self) -> Result<(), Error> {
        self.look_again_at = Instant::now() + NEW_STREAMS_EVERY;
        let ids: Vec<i32> =
            on_pool!(&self.pool, sqlx::query_scalar(sql::STREAM_IDS), fetch_all).await.map_err(Error::db)?;
        let new: Vec<String> =
            ids.iter().filter(|id| !self.streams.contains(id)).map(|id| format!("sluice.{id}")).collect();
        if !new.is_empty() {
            self.listener.listen_all(new.iter().map(String::as_str)).await.map_err(Error::db)?;
            self.streams.extend(ids);
        }
        Ok(())
    }
}
