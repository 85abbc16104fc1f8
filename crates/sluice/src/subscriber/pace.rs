//! The pace: how many tasks one fetch asks for. Unless the subscription
//! fixes the batch size, the claim grows while handlers wait on fetches and
//! every fetch comes back full, and shrinks while claimed tasks are still
//! waiting for a handler when the next fetch returns. A drain of quick
//! handlers so reaches the large claims that a tuned setting would use
//! (each fetch costs a few milliseconds, whatever its size), while slow
//! handlers keep few tasks in memory, where other workers cannot take them.

use super::Subscription;

/// The claim size: fixed, or adapting between two bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    claim: usize,
    min: usize,
    max: usize,
    /// Handlers sat idle with nothing buffered while the current fetch ran.
    starved: bool,
}

impl Pace {
    /// The pace a subscription asks for: fixed when it sets a batch size,
    /// adapting between the named defaults otherwise.
    pub(crate) fn of(sub: &Subscription) -> Self {
        if sub.batch_fixed {
            Pace::fixed(sub.batch_size)
        } else {
            Pace::adaptive(sub.batch_size, Subscription::BATCH_SIZE_MIN_DEFAULT, Subscription::BATCH_SIZE_MAX_DEFAULT)
        }
    }

    /// A claim size fixed at `batch`.
    pub(crate) fn fixed(batch: usize) -> Self {
        Pace { claim: batch, min: batch, max: batch, starved: false }
    }

    /// A claim size that starts at `start` and stays within `min..=max`.
    pub(crate) fn adaptive(start: usize, min: usize, max: usize) -> Self {
        let (min, max) = (min.max(1), max.max(1));
        Pace { claim: start.clamp(min, max), min, max, starved: false }
    }

    /// Tasks one fetch asks for at most now.
    pub(crate) fn claim(&self) -> usize {
        self.claim
    }

    /// The largest claim this pace can make.
    pub(crate) fn largest(&self) -> usize {
        self.max
    }

    /// A handler had nothing to run while a fetch was under way.
    pub(crate) fn starved(&mut self) {
        self.starved = true;
    }

    /// A fetch returned `claimed` of the `asked` tasks, and `waiting`
    /// claimed tasks were still in the buffer.
    pub(crate) fn fetched(&mut self, asked: usize, claimed: usize, waiting: usize) {
        if asked > 0 && claimed >= asked && self.starved {
            // Work waits and the handlers outran the fetch: ask for more.
            self.claim = (self.claim * 2).min(self.max);
        } else if !self.starved && waiting * 2 >= self.claim {
            // Half a claim still waiting for handlers: the fetch outran them.
            self.claim = (self.claim / 2).max(self.min);
        }
        self.starved = false;
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;

    #[test]
    fn grows_while_handlers_wait_on_full_fetches_up_to_the_ceiling() {
        let mut pace = Pace::adaptive(100, 10, 1000);
        for expected in [200, 400, 800, 1000, 1000] {
            pace.starved();
            let ask = pace.claim();
            pace.fetched(ask, ask, 0);
            assert_eq!(pace.claim(), expected);
        }
    }

    #[test]
    fn does_not_grow_on_a_partial_fetch_or_without_waiting_handlers() {
        let mut pace = Pace::adaptive(100, 10, 1000);
        pace.starved();
        pace.fetched(100, 40, 0);
        assert_eq!(pace.claim(), 100, "the backlog is smaller than a claim");
        pace.fetched(100, 100, 0);
        assert_eq!(pace.claim(), 100, "the handlers never waited");
    }

    #[test]
    fn shrinks_while_claimed_tasks_wait_for_handlers_down_to_the_floor() {
        let mut pace = Pace::adaptive(100, 10, 1000);
        for expected in [50, 25, 12, 10, 10] {
            pace.fetched(pace.claim(), pace.claim(), pace.claim());
            assert_eq!(pace.claim(), expected);
        }
    }

    #[test]
    fn a_subscription_adapts_unless_it_sets_a_batch_size() {
        let adapting = Pace::of(&crate::Subscription::new("s", "c"));
        assert_eq!((adapting.claim(), adapting.largest()), (100, 1000));
        let fixed = Pace::of(&crate::Subscription::new("s", "c").batch_size(250));
        assert_eq!((fixed.claim(), fixed.largest()), (250, 250));
    }

    #[test]
    fn a_fixed_pace_never_moves() {
        let mut pace = Pace::fixed(250);
        pace.starved();
        pace.fetched(250, 250, 0);
        pace.fetched(250, 250, 250);
        assert_eq!(pace.claim(), 250);
    }
}
