//! The notifier: one LISTEN connection per process and database, shared by
//! every subscriber on it, with a topic per stream. A notification wakes the
//! subscribers of its stream (a `Notify` folds a burst into one wake-up);
//! after a reconnect every subscriber is woken, since anything may have
//! happened meanwhile. Polling goes on regardless, so a lost connection only
//! costs latency.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ErrorBackoff;

/// How long connecting the LISTEN connection may take before it is tried again.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The notifiers alive in this process, by database.
static NOTIFIERS: LazyLock<Mutex<HashMap<String, Weak<Notifier>>>> = LazyLock::new(Default::default);

type Topics = Arc<Mutex<HashMap<String, Vec<Weak<Notify>>>>>;

pub(crate) struct Notifier {
    database: String,
    topics: Topics,
    /// Tells the listening task that a topic was added.
    changed: Arc<Notify>,
    stop: CancellationToken,
}

/// One subscriber's interest in one stream's notifications.
pub(crate) struct Topic {
    wake: Arc<Notify>,
    // Keeps the notifier (and its connection) alive while subscribed.
    _notifier: Arc<Notifier>,
}

impl Topic {
    /// Waits for the next notification of the stream (or a reconnect).
    pub(crate) async fn notified(&self) {
        self.wake.notified().await
    }
}

impl Notifier {
    /// Subscribes to `channel` on the process's notifier for the database
    /// that `options` connect to, starting one if there is none.
    pub(crate) fn subscribe(options: &PgConnectOptions, channel: &str) -> Topic {
        let database = options.to_url_lossy().to_string();
        let notifier = {
            let mut all = NOTIFIERS.lock().expect("notifiers poisoned");
            all.retain(|_, n| n.strong_count() > 0);
            match all.get(&database).and_then(Weak::upgrade) {
                Some(n) => n,
                None => {
                    // Its own connection, so the notifier outlives any one pool.
                    let own = PgPoolOptions::new().max_connections(1).connect_lazy_with(options.clone());
                    let n = Arc::new(Notifier {
                        database: database.clone(),
                        topics: Arc::default(),
                        changed: Arc::new(Notify::new()),
                        stop: CancellationToken::new(),
                    });
                    tokio::spawn(listen(own, n.topics.clone(), n.changed.clone(), n.stop.clone()));
                    all.insert(database, Arc::downgrade(&n));
                    n
                }
            }
        };
        let wake = Arc::new(Notify::new());
        notifier
            .topics
            .lock()
            .expect("topics poisoned")
            .entry(channel.to_string())
            .or_default()
            .push(Arc::downgrade(&wake));
        notifier.changed.notify_one();
        Topic { wake, _notifier: notifier }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop.cancel();
        debug!(database = %redact(&self.database), "notifier stopped");
    }
}

fn redact(url: &str) -> String {
    url.split_once('@').map(|(_, host)| host.to_string()).unwrap_or_else(|| url.to_string())
}

/// Wakes every live subscriber of `channel`, or of every channel.
fn wake(topics: &Topics, channel: Option<&str>) {
    let mut topics = topics.lock().expect("topics poisoned");
    for (name, subscribers) in topics.iter_mut() {
        if channel.is_some_and(|c| c != name) {
            continue;
        }
        subscribers.retain(|w| match w.upgrade() {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        });
    }
}

async fn listen(pool: PgPool, topics: Topics, changed: Arc<Notify>, stop: CancellationToken) {
    let mut errors = ErrorBackoff::new();
    'connect: loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            l = super::timed(CONNECT_TIMEOUT, "connecting to LISTEN", PgListener::connect_with(&pool)) => l,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                let wait = errors.next();
                warn!(error = %e, retry_in = ?wait, "LISTEN connection failed; polling meanwhile");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue 'connect,
                }
            }
        };
        let mut listening: HashSet<String> = HashSet::new();
        loop {
            // Listen to every topic not listened to yet on this connection.
            let wanted: Vec<String> = topics
                .lock()
                .expect("topics poisoned")
                .iter()
                .filter(|(name, subs)| !listening.contains(*name) && subs.iter().any(|w| w.strong_count() > 0))
                .map(|(name, _)| name.clone())
                .collect();
            if !wanted.is_empty() {
                let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
                if let Err(e) = listener.listen_all(names).await {
                    let wait = errors.next();
                    warn!(error = %e, retry_in = ?wait, "LISTEN failed; reconnecting");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => continue 'connect,
                    }
                }
                listening.extend(wanted);
                errors.reset();
                // Anything may have happened while these were not listened to.
                wake(&topics, None);
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = changed.notified() => {}
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => wake(&topics, Some(n.channel())),
                    Ok(None) => {
                        // The connection dropped. sqlx would reconnect on the
                        // next call and LISTEN again on its own, but nothing
                        // would wake the subscribers once it listens: what
                        // was published while it reconnected would wait for
                        // the next poll. Reconnect here instead, where every
                        // subscriber is woken once the LISTENs are back.
                        warn!("LISTEN connection lost; reconnecting");
                        wake(&topics, None);
                        continue 'connect;
                    }
                    Err(e) => {
                        let wait = errors.next();
                        warn!(error = %e, retry_in = ?wait, "LISTEN failed; reconnecting");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => continue 'connect,
                        }
                    }
                }
            }
        }
    }
}
