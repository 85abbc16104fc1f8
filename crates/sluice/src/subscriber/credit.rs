//! Credit: how many tasks a subscriber may hold at once, set while it runs,
//! for a subscriber whose handlers hand tasks on to someone who says how
//! many more they can take (the gateway's clients).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// A limit on the tasks a subscriber holds (claimed and not yet settled),
/// shared with whoever changes it: [`Subscription::credit`](crate::Subscription::credit).
/// The subscriber claims only while it holds fewer, never more than its
/// concurrency, and prefetches nothing beyond it; changing the credit wakes
/// it at once (a change is never missed, however it falls against the
/// subscriber's loop). Lowering it below what is held takes nothing back: the
/// subscriber claims again once enough are settled.
///
/// ```
/// let credit = sluice::Credit::new(10);
/// credit.add(5);
/// assert_eq!(credit.get(), 15);
/// ```
#[derive(Debug, Clone)]
pub struct Credit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: AtomicUsize,
    /// Bumped at every change: each subscriber's receiver remembers the
    /// last change it saw, so a change made while it was busy is seen when
    /// it next waits (a `Notify::notify_waiters` would be lost then).
    changes: watch::Sender<()>,
}

impl Default for Credit {
    fn default() -> Credit {
        Credit::new(0)
    }
}

impl Credit {
    /// A credit of `n` tasks.
    pub fn new(n: usize) -> Credit {
        Credit { inner: Arc::new(Inner { limit: AtomicUsize::new(n), changes: watch::Sender::new(()) }) }
    }

    /// How many tasks may be held now.
    pub fn get(&self) -> usize {
        self.inner.limit.load(Ordering::Acquire)
    }

    /// Allows `n` more.
    pub fn add(&self, n: usize) {
        self.inner.limit.fetch_add(n, Ordering::AcqRel);
        self.inner.changes.send_replace(());
    }

    /// Sets the limit to `n`.
    pub fn set(&self, n: usize) {
        self.inner.limit.store(n, Ordering::Release);
        self.inner.changes.send_replace(());
    }

    /// The changes from now on, for one subscriber's loop.
    pub(crate) fn changes(&self) -> watch::Receiver<()> {
        self.inner.changes.subscribe()
    }
}
