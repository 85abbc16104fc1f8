//! What this worker did, for `sluice stats` and the throughput history:
//! tasks completed and attempts failed, counted in memory as they happen and
//! reported with each heartbeat (no write per task). Two figures go with a
//! beat: the last minute's, a window that slides with the heartbeats (each
//! beat remembers the running totals, and the figure is the difference to
//! the oldest beat within the last minute); and those not yet added to the
//! history, which the worker's last word adds too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Running totals since the subscriber started, and how much of them the
/// throughput history has.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    completed: AtomicU64,
    failed: AtomicU64,
    completed_reported: AtomicU64,
    failed_reported: AtomicU64,
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

    /// Completed and failed since the history last took them: pass them to
    /// [`Rates::reported`] once written, so a failed write sends them again.
    pub(crate) fn unreported(&self) -> (i64, i64) {
        let (completed, failed) = self.totals();
        let since = |total: u64, reported: &AtomicU64| (total - reported.load(Ordering::Relaxed)) as i64;
        (since(completed, &self.completed_reported), since(failed, &self.failed_reported))
    }

    /// The history now has `unreported` (as [`Rates::unreported`] gave them).
    pub(crate) fn reported(&self, (completed, failed): (i64, i64)) {
        self.completed_reported.fetch_add(completed as u64, Ordering::Relaxed);
        self.failed_reported.fetch_add(failed as u64, Ordering::Relaxed);
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

    #[test]
    fn the_history_gets_each_completion_once_and_again_after_a_failed_write() {
        let rates = Rates::default();
        rates.completed(3);
        rates.failed();
        let first = rates.unreported();
        assert_eq!(first, (3, 1));
        rates.completed(2);
        // The write of `first` failed: the next beat sends it again, with what came since.
        let second = rates.unreported();
        assert_eq!(second, (5, 1));
        rates.reported(second);
        assert_eq!(rates.unreported(), (0, 0));
        rates.completed(1);
        assert_eq!(rates.unreported(), (1, 0));
    }
}
