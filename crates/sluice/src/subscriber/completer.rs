//! The completer: writes implicit acks, many per statement. Whatever queues
//! up while one flush runs goes into the next, so batches grow with load and
//! an idle subscriber acks at once. A flush that keeps failing is retried a
//! bounded number of times, then its tasks are given up (they come back and
//! run again): a permanent error never wedges the subscriber.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::registry::Key;
use super::{timed, ErrorBackoff, Shared, SubscriberEvent};
use crate::message::ack_tasks;

/// Acks written by one statement at most.
pub(crate) const MAX_FLUSH: usize = 5_000;
/// Tries of one flush before its tasks are given up.
pub(crate) const FLUSH_TRIES: u32 = 5;

/// An ack waiting for its flush, and who wants to know how it went.
struct Queued {
    key: Key,
    /// Told true once the ack is written, false if its lease was lost or
    /// the flush was given up.
    done: Option<oneshot::Sender<bool>>,
}

/// The sending side: executors queue their implicit acks here.
#[derive(Clone)]
pub(crate) struct Acks {
    tx: mpsc::Sender<Queued>,
    pending: Arc<AtomicUsize>,
}

impl Acks {
    /// Queues an ack; false when the completer has stopped.
    pub(crate) async fn send(&self, key: Key) -> bool {
        self.queue(Queued { key, done: None }).await
    }

    /// Queues an ack and waits for its flush: `Some(true)` once written,
    /// `Some(false)` when refused (lease lost) or given up, `None` when the
    /// completer has stopped.
    pub(crate) async fn send_and_wait(&self, key: Key) -> Option<bool> {
        let (done, flushed) = oneshot::channel();
        if !self.queue(Queued { key, done: Some(done) }).await {
            return None;
        }
        flushed.await.ok()
    }

    async fn queue(&self, queued: Queued) -> bool {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(queued).await.is_ok() {
            return true;
        }
        self.pending.fetch_sub(1, Ordering::AcqRel);
        false
    }
}

/// What the completer did, for the shutdown report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Completed {
    pub(crate) acked: usize,
    pub(crate) given_up: usize,
}

/// A running completer: the sending side, the acks queued but not yet
/// written, the acks given up so far, and its task.
pub(crate) type Spawned = (Acks, Arc<AtomicUsize>, Arc<AtomicUsize>, tokio::task::JoinHandle<Completed>);

/// Starts a completer with room for `capacity` queued acks.
pub(crate) fn spawn(shared: Arc<Shared>, capacity: usize) -> Spawned {
    use tracing::Instrument;
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let pending = Arc::new(AtomicUsize::new(0));
    let given_up = Arc::new(AtomicUsize::new(0));
    let handle = tokio::spawn(run(shared, rx, pending.clone(), given_up.clone()).in_current_span());
    (Acks { tx, pending: pending.clone() }, pending, given_up, handle)
}

async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Queued>,
    pending: Arc<AtomicUsize>,
    given_up_so_far: Arc<AtomicUsize>,
) -> Completed {
    let mut done = Completed::default();
    let mut queued: Vec<Queued> = Vec::new();
    let mut batch: Vec<Key> = Vec::new();
    while let Some(first) = rx.recv().await {
        queued.clear();
        queued.push(first);
        while queued.len() < MAX_FLUSH {
            match rx.try_recv() {
                Ok(q) => queued.push(q),
                Err(_) => break,
            }
        }
        batch.clear();
        batch.extend(queued.iter().map(|q| q.key));
        let (acked, given_up) = flush(&shared, &batch).await;
        done.acked += acked.len();
        done.given_up += given_up;
        for q in queued.drain(..) {
            if let Some(tell) = q.done {
                let _ = tell.send(acked.contains(&q.key.0));
            }
        }
        given_up_so_far.fetch_add(given_up, Ordering::AcqRel);
        shared.registry.forget_all(&batch);
        pending.fetch_sub(batch.len(), Ordering::AcqRel);
    }
    done
}

/// Writes one batch of acks; returns (the event ids acked, how many given up).
#[tracing::instrument(name = "sluice.flush", level = "debug", skip_all, fields(tasks = batch.len()))]
async fn flush(shared: &Shared, batch: &[Key]) -> (std::collections::HashSet<i64>, usize) {
    let events: Vec<i64> = batch.iter().map(|k| k.0).collect();
    let tokens: Vec<i64> = batch.iter().map(|k| k.1).collect();
    let mut backoff = ErrorBackoff::new();
    for tries in 1..=FLUSH_TRIES {
        let started = std::time::Instant::now();
        let result =
            timed(shared.db_timeout, "flushing acks", ack_tasks(&shared.pool, shared.consumer_id, &events, &tokens))
                .await;
        match result {
            Ok(acked) => {
                let lost = batch.len() - acked.len();
                shared.metrics.completed(acked.len());
                shared.metrics.acks_refused.increment(lost as u64);
                tracing::trace!(acked = acked.len(), ms = started.elapsed().as_secs_f64() * 1e3, "flushed acks");
                if lost > 0 {
                    warn!(lost, "some acks came after their leases were lost; those tasks run again");
                }
                shared.emit(SubscriberEvent::Flushed { acked: acked.len(), lost });
                if !acked.is_empty() {
                    shared.acked();
                }
                return (acked.into_iter().collect(), 0);
            }
            Err(e) if tries < FLUSH_TRIES => {
                let wait = backoff.next();
                warn!(error = %e, pending = batch.len(), retry_in = ?wait, "ack flush failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                warn!(
                    error = %e,
                    tasks = batch.len(),
                    "ack flush failed {FLUSH_TRIES} times; giving those tasks up, they will run again"
                );
                shared.emit(SubscriberEvent::AcksGivenUp { tasks: batch.len() });
                return (Default::default(), batch.len());
            }
        }
    }
    unreachable!("the last try returns")
}
