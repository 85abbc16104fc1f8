//! Live pages: server-sent events that tell every open page to refresh,
//! fed from one LISTEN connection per dashboard ([`sluice::watch`]) however
//! many pages are open. A burst of notifications is one refresh after
//! [`DEBOUNCE`]; with no notification, a refresh every [`QUIET_REFRESH`]
//! anyway, since acks do not notify. The connection is opened by the first
//! page that listens and closed once none does.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::WebState;

/// How long a burst of notifications is gathered into one refresh.
pub const DEBOUNCE: Duration = Duration::from_secs(1);

/// How often pages refresh when nothing notifies.
pub const QUIET_REFRESH: Duration = Duration::from_secs(10);

/// The name of the event that asks a page to refresh (`hx-trigger="sse:refresh"`).
pub(crate) const REFRESH_EVENT: &str = "refresh";

/// The one watcher of a dashboard, shared by its pages.
#[derive(Default)]
pub(crate) struct Hub {
    sender: Mutex<Option<broadcast::Sender<()>>>,
}

impl Hub {
    /// A receiver of refreshes, starting the watcher if none runs.
    fn subscribe(self: &Arc<Self>, state: &WebState) -> broadcast::Receiver<()> {
        let mut slot = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = slot.as_ref() {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(4);
        *slot = Some(sender.clone());
        tokio::spawn(watch(Arc::clone(self), state.pool().clone(), sender));
        receiver
    }

    /// Stops the watcher when no page listens any more; it is restarted by
    /// the next. Checked under the lock, so no page subscribes in between.
    fn retire_if_unwatched(&self) -> bool {
        let mut slot = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|s| s.receiver_count() == 0) {
            *slot = None;
            return true;
        }
        false
    }
}

async fn watch(hub: Arc<Hub>, pool: sqlx::PgPool, sender: broadcast::Sender<()>) {
    let mut changes = None;
    loop {
        if changes.is_none() {
            changes = match sluice::watch(&pool).await {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %e, "the dashboard cannot LISTEN; its pages refresh every {QUIET_REFRESH:?}");
                    None
                }
            };
        }
        let notified = match changes.as_mut() {
            Some(c) => tokio::select! {
                woken = c.next() => match woken {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(error = %e, "the dashboard's LISTEN connection failed; reconnecting");
                        changes = None;
                        false
                    }
                },
                _ = tokio::time::sleep(QUIET_REFRESH) => false,
            },
            None => {
                tokio::time::sleep(QUIET_REFRESH).await;
                false
            }
        };
        if notified {
            // Gather the burst: what comes meanwhile is drained by the next wait.
            tokio::time::sleep(DEBOUNCE).await;
        }
        if hub.retire_if_unwatched() {
            debug!("no dashboard page listens; closing the LISTEN connection");
            return;
        }
        let _ = sender.send(());
    }
}

/// `GET /live`: the refresh events, one `refresh` per change.
pub(crate) async fn events(State(state): State<WebState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.hub().subscribe(&state);
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        // Lagging behind only means refreshes were missed: one does for all.
        match receiver.recv().await {
            Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {
                Some((Ok(Event::default().event(REFRESH_EVENT).data(REFRESH_EVENT)), receiver))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
