//! What this worker did in the last minute, for `sluice stats`: tasks
//! completed and attempts failed, counted in memory as they happen and
//! reported with each heartbeat (no write per task). The window slides with
//! the heartbeats: each beat remembers the running totals, and the figure
//! reported is the difference to the oldest beat within the last minute.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Running totals since the subscriber started.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    completed: AtomicU64,
    failed: AtomicU64,
}

impl Rates {
    pub(crate) fn completed(&self, tasks: usize) {
        self.completed.fetch_add(tasks as u64, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn totals(&self) -> (u64, u64) {
        (self.completed.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// The keeper's memory of the totals at past beats, the last minute's worth.
#[derive(Debug, Default)]
pub(crate) struct LastMinute {
    beats: VecDeque<(Instant, (u64, u64))>,
}

impl LastMinute {
    /// Completed and failed in the last minute (or since the first beat,
    /// when the subscriber is younger than that), as of `now`.
    pub(crate) fn observe(&mut self, rates: &Rates, now: Instant) -> (i32, i32) {
        let totals = rates.totals();
        if self.beats.is_empty() {
            // The subscriber's start: everything so far is recent.
            self.beats.push_back((now, (0, 0)));
        }
        while self.beats.len() > 1 && now.duration_since(self.beats[1].0) >= WINDOW {
            self.beats.pop_front();
        }
        let (_, (completed, failed)) = self.beats[0];
        self.beats.push_back((now, totals));
        let clamp = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        (clamp(totals.0 - completed), clamp(totals.1 - failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_happened_within_the_last_minute_only() {
        let rates = Rates::default();
        let mut window = LastMinute::default();
        let start = Instant::now();
        rates.completed(10);
        rates.failed();
        assert_eq!(window.observe(&rates, start), (10, 1), "everything since the start");
        rates.completed(5);
        assert_eq!(window.observe(&rates, start + Duration::from_secs(30)), (15, 1));
        rates.completed(1);
        // 61 s after the first beat: the first beat's totals (10, 1) drop out.
        assert_eq!(window.observe(&rates, start + Duration::from_secs(61)), (6, 0));
        assert_eq!(window.observe(&rates, start + Duration::from_secs(200)), (0, 0), "nothing in the last minute");
    }
}
