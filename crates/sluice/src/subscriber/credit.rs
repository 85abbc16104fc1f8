//! Credit: how many tasks a subscriber may hold at once, set while it runs,
//! for a subscriber whose handlers hand tasks on to someone who says how
//! many more they can take (the gateway's clients).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// A limit on the tasks a subscriber holds (claimed and not yet settled),
/// shared with whoever changes it: [`Subscription::credit`](crate::Subscription::credit).
/// The subscriber claims only while it holds fewer, never more than its
/// concurrency, and prefetches nothing beyond it; raising the credit wakes
/// it at once. Lowering it below what is held takes nothing back: the
/// subscriber claims again once enough are settled.
///
/// ```
/// let credit = sluice::Credit::new(10);
/// credit.add(5);
/// assert_eq!(credit.get(), 15);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Credit {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    limit: AtomicUsize,
    raised: Notify,
}

impl Credit {
    /// A credit of `n` tasks.
    pub fn new(n: usize) -> Credit {
        let credit = Credit::default();
        credit.inner.limit.store(n, Ordering::Release);
        credit
    }

    /// How many tasks may be held now.
    pub fn get(&self) -> usize {
        self.inner.limit.load(Ordering::Acquire)
    }

    /// Allows `n` more.
    pub fn add(&self, n: usize) {
        self.inner.limit.fetch_add(n, Ordering::AcqRel);
        self.inner.raised.notify_waiters();
    }

    /// Sets the limit to `n`.
    pub fn set(&self, n: usize) {
        self.inner.limit.store(n, Ordering::Release);
        self.inner.raised.notify_waiters();
    }

    /// Resolves when the credit changes next.
    pub(crate) async fn changed(&self) {
        self.inner.raised.notified().await;
    }
}
