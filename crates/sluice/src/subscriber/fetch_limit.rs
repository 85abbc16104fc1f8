//! A bound on the fetches that run at once across the subscribers sharing
//! it, for a process that starts many subscribers on one pool (the gateway
//! starts one per client subscription).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most this many fetches (refill and claim, `sluice.fetch_v2`) of the
/// subscribers that share it run at once: [`Subscription::fetch_limit`](crate::Subscription::fetch_limit).
/// A refill may wait up to 2 s for its consumer's row (refills of one
/// consumer take turns) while it holds a pool connection, so many
/// subscribers of one consumer on one pool could take every connection,
/// and the heartbeats, acks and everything else the pool serves would
/// wait behind them. With a bound below the pool's size they never do.
///
/// ```
/// let limit = sluice::FetchLimit::new(4);
/// let one = sluice::Subscription::new("orders", "billing").fetch_limit(limit.clone());
/// let two = sluice::Subscription::new("orders", "shipping").fetch_limit(limit);
/// # let _ = (one, two);
/// ```
#[derive(Debug, Clone)]
pub struct FetchLimit {
    permits: Arc<Semaphore>,
    size: usize,
}

impl FetchLimit {
    /// At most `n` fetches at once (at least 1).
    pub fn new(n: usize) -> FetchLimit {
        let size = n.max(1);
        FetchLimit { permits: Arc::new(Semaphore::new(size)), size }
    }

    /// How many fetches may run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Waits for a turn to fetch; the turn ends when the permit drops.
    pub(crate) async fn turn(&self) -> OwnedSemaphorePermit {
        self.permits.clone().acquire_owned().await.expect("the semaphore is never closed")
    }
}
