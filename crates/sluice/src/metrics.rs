//! Sluice's metrics, through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! The library records and never installs a recorder: without one (the
//! application's, such as `metrics-exporter-prometheus`, or `sluice serve`'s
//! `/metrics`) every update is a no-op. A subscriber registers its handles
//! once, when [`sub`](crate::sub) starts it, so handling a task allocates no
//! labels.
//!
//! | name | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `sluice_events_published_total` | counter | `stream` | Events written by [`publish`](crate::publish) and [`publish_batch`](crate::publish_batch), counted when the statement returns (a caller's transaction may still roll them back). |
//! | `sluice_tasks_claimed_total` | counter | `stream`, `consumer` | Tasks a subscriber claimed (leased to itself) for its handlers. |
//! | `sluice_tasks_acked_total` | counter | `stream`, `consumer` | Tasks completed: implicit acks once their flush is written, explicit ones ([`Message::ack`](crate::Message::ack), [`TaskRef::ack`](crate::TaskRef::ack)) and `ack_tx` when the call returns `Ok` (the caller's commit decides the rest). |
//! | `sluice_tasks_nacked_total` | counter | `stream`, `consumer`, `requeue` | Explicit nacks that took effect; `requeue` is `start` or `end` ([`Nack::requeue_start`](crate::Nack::requeue_start), [`Nack::requeue_end`](crate::Nack::requeue_end)) or `none` ([`Nack::discard`](crate::Nack::discard)). |
//! | `sluice_tasks_deferred_total` | counter | `stream`, `consumer` | Explicit deferrals that took effect. |
//! | `sluice_tasks_failed_total` | counter | `stream`, `consumer` | Failed attempts: the handler returned an error, panicked or outlived its timeout, or the payload did not deserialize. Each is then retried or dead-lettered. |
//! | `sluice_tasks_dead_lettered_total` | counter | `stream`, `consumer` | Tasks discarded (the dead-letter state): a failure with no attempt left or [`HandlerError::discard`](crate::HandlerError::discard), a nack that discards (asked, or a requeue on the last attempt), a lease that ended on the last attempt, a release (shutdown, a gateway client gone) on the last attempt. |
//! | `sluice_tasks_rescued_total` | counter | `stream`, `consumer` | Tasks whose lease ended, or whose worker stopped responding, made available again by the consumer's housekeeping. |
//! | `sluice_acks_refused_total` | counter | `stream`, `consumer` | Acks refused by fencing: the attempt had lost its lease (the task was handed out again, or settled already), so its work will run again. Implicit and explicit acks alike; refused nacks and deferrals are not counted. |
//! | `sluice_task_handler_duration_seconds` | histogram | `stream`, `consumer`, `outcome` | How long handlers ran; `outcome` is `ok`, `error`, `panic` or `timeout`. |
//! | `sluice_task_wait_duration_seconds` | histogram | `stream`, `consumer` | From an event's publication to the start of its first attempt's handler, by the database's clock at publication and this process's at the start (0 when they disagree). Later attempts are not measured. |
//! | `sluice_fetch_duration_seconds` | histogram | `stream`, `consumer` | One fetch's round trip (refill and claim, `sluice.fetch_v2`), successful or not. |
//! | `sluice_tasks_in_flight` | gauge | `stream`, `consumer` | Handlers running now in this process. |
//! | `sluice_xmin_horizon_age_seconds` | gauge | — | Age of the oldest transaction holding back the database's xmin horizon (what keeps dead task rows from being vacuumed): read from the database by an exporter with [`xmin_horizon_age`], not recorded by the library. |
//!
//! No label holds a task, an event, a subject or an error: a stream's and a
//! consumer's names are the only free-form values.
//!
//! [`NAMES`] lists them all and [`HISTOGRAMS`] the histograms, for an
//! exporter that sets buckets per metric.

use std::time::Duration;

use ::metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use sqlx::PgPool;

use crate::error::Error;

/// Counter: events published, by `stream`.
pub const EVENTS_PUBLISHED: &str = "sluice_events_published_total";
/// Counter: tasks claimed, by `stream` and `consumer`.
pub const TASKS_CLAIMED: &str = "sluice_tasks_claimed_total";
/// Counter: tasks acked, by `stream` and `consumer`.
pub const TASKS_ACKED: &str = "sluice_tasks_acked_total";
/// Counter: explicit nacks, by `stream`, `consumer` and `requeue` (`start`, `end`, `none`).
pub const TASKS_NACKED: &str = "sluice_tasks_nacked_total";
/// Counter: explicit deferrals, by `stream` and `consumer`.
pub const TASKS_DEFERRED: &str = "sluice_tasks_deferred_total";
/// Counter: failed attempts, by `stream` and `consumer`.
pub const TASKS_FAILED: &str = "sluice_tasks_failed_total";
/// Counter: tasks dead-lettered (discarded), by `stream` and `consumer`.
pub const TASKS_DEAD_LETTERED: &str = "sluice_tasks_dead_lettered_total";
/// Counter: tasks rescued from ended leases and dead workers, by `stream` and `consumer`.
pub const TASKS_RESCUED: &str = "sluice_tasks_rescued_total";
/// Counter: acks refused because the attempt had lost its lease, by `stream` and `consumer`.
pub const ACKS_REFUSED: &str = "sluice_acks_refused_total";
/// Histogram: handler run time in seconds, by `stream`, `consumer` and `outcome`.
pub const HANDLER_DURATION: &str = "sluice_task_handler_duration_seconds";
/// Histogram: publication to first handler start in seconds, by `stream` and `consumer`.
pub const WAIT_DURATION: &str = "sluice_task_wait_duration_seconds";
/// Histogram: fetch round trip in seconds, by `stream` and `consumer`.
pub const FETCH_DURATION: &str = "sluice_fetch_duration_seconds";
/// Gauge: handlers running now, by `stream` and `consumer`.
pub const TASKS_IN_FLIGHT: &str = "sluice_tasks_in_flight";
/// Gauge, read from the database by an exporter: see [`xmin_horizon_age`].
pub const XMIN_HORIZON_AGE: &str = "sluice_xmin_horizon_age_seconds";

/// Every metric's name.
pub const NAMES: &[&str] = &[
    EVENTS_PUBLISHED,
    TASKS_CLAIMED,
    TASKS_ACKED,
    TASKS_NACKED,
    TASKS_DEFERRED,
    TASKS_FAILED,
    TASKS_DEAD_LETTERED,
    TASKS_RESCUED,
    ACKS_REFUSED,
    HANDLER_DURATION,
    WAIT_DURATION,
    FETCH_DURATION,
    TASKS_IN_FLIGHT,
    XMIN_HORIZON_AGE,
];

/// The histograms' names, all in seconds.
pub const HISTOGRAMS: &[&str] = &[HANDLER_DURATION, WAIT_DURATION, FETCH_DURATION];

/// How long ago the oldest transaction still holding back the xmin horizon
/// of the database `pool` connects to began: a session's open transaction
/// or a prepared one (replication slots hold it too, but have no start time
/// to read). `None` when no transaction holds it; who holds it is in
/// [`database_health`](crate::database_health). The value of
/// [`XMIN_HORIZON_AGE`]: while it grows, vacuum cannot remove the dead rows
/// acks leave behind, and claims slow down (docs/DESIGN.md).
pub async fn xmin_horizon_age(pool: &PgPool) -> Result<Option<Duration>, Error> {
    let holder = crate::stats::database_health(pool).await?.xmin_holder;
    Ok(holder.and_then(|h| h.age_seconds).map(|s| Duration::from_secs_f64(s.max(0.0))))
}

/// How a handler run ended, for [`HANDLER_DURATION`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Panic,
    Timeout,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
            Outcome::Timeout => "timeout",
        }
    }
}

/// What an explicit ack, nack or deferral did, to count.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settled {
    Acked,
    /// Refused by fencing.
    AckRefused,
    /// `discarded` when the task is now a dead letter.
    Nacked {
        requeue: Requeue,
        discarded: bool,
    },
    Deferred,
}

/// The `requeue` label of [`TASKS_NACKED`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Requeue {
    Start,
    End,
    /// A discard.
    None,
}

impl Requeue {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Requeue::Start => "start",
            Requeue::End => "end",
            Requeue::None => "none",
        }
    }
}

/// One subscription's metric handles, registered once by `sub()`.
pub(crate) struct Metrics {
    pub(crate) claimed: Counter,
    acked: Counter,
    nacked_start: Counter,
    nacked_end: Counter,
    nacked_none: Counter,
    deferred: Counter,
    failed: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) rescued: Counter,
    pub(crate) acks_refused: Counter,
    handled_ok: Histogram,
    handled_error: Histogram,
    handled_panic: Histogram,
    handled_timeout: Histogram,
    pub(crate) wait: Histogram,
    pub(crate) fetch: Histogram,
    in_flight: Gauge,
    /// The same completions and failures, readable: what the heartbeat
    /// reports for `sluice stats`.
    pub(crate) rates: crate::subscriber::Rates,
}

impl Metrics {
    pub(crate) fn new(stream: &str, consumer: &str) -> Self {
        let labels = [("stream", stream.to_string()), ("consumer", consumer.to_string())];
        let nacked = |requeue: Requeue| {
            let mut labels = labels.to_vec();
            labels.push(("requeue", requeue.as_str().to_string()));
            counter!(TASKS_NACKED, &labels)
        };
        let handled = |outcome: Outcome| {
            let mut labels = labels.to_vec();
            labels.push(("outcome", outcome.as_str().to_string()));
            histogram!(HANDLER_DURATION, &labels)
        };
        Metrics {
            claimed: counter!(TASKS_CLAIMED, &labels),
            acked: counter!(TASKS_ACKED, &labels),
            nacked_start: nacked(Requeue::Start),
            nacked_end: nacked(Requeue::End),
            nacked_none: nacked(Requeue::None),
            deferred: counter!(TASKS_DEFERRED, &labels),
            failed: counter!(TASKS_FAILED, &labels),
            dead_lettered: counter!(TASKS_DEAD_LETTERED, &labels),
            rescued: counter!(TASKS_RESCUED, &labels),
            acks_refused: counter!(ACKS_REFUSED, &labels),
            handled_ok: handled(Outcome::Ok),
            handled_error: handled(Outcome::Error),
            handled_panic: handled(Outcome::Panic),
            handled_timeout: handled(Outcome::Timeout),
            wait: histogram!(WAIT_DURATION, &labels),
            fetch: histogram!(FETCH_DURATION, &labels),
            in_flight: gauge!(TASKS_IN_FLIGHT, &labels),
            rates: Default::default(),
        }
    }

    /// Tasks completed by a flush of implicit acks.
    pub(crate) fn completed(&self, tasks: usize) {
        self.acked.increment(tasks as u64);
        self.rates.completed(tasks);
    }

    /// A failed attempt: the handler erred, panicked, timed out, or its
    /// payload did not deserialize.
    pub(crate) fn failed(&self) {
        self.failed.increment(1);
        self.rates.failed();
    }

    pub(crate) fn handled(&self, outcome: Outcome, took: Duration) {
        let histogram = match outcome {
            Outcome::Ok => &self.handled_ok,
            Outcome::Error => &self.handled_error,
            Outcome::Panic => &self.handled_panic,
            Outcome::Timeout => &self.handled_timeout,
        };
        histogram.record(took.as_secs_f64());
    }

    pub(crate) fn settled(&self, settled: Settled) {
        match settled {
            Settled::Acked => self.completed(1),
            Settled::AckRefused => self.acks_refused.increment(1),
            Settled::Nacked { requeue, discarded } => {
                match requeue {
                    Requeue::Start => self.nacked_start.increment(1),
                    Requeue::End => self.nacked_end.increment(1),
                    Requeue::None => self.nacked_none.increment(1),
                }
                if discarded {
                    self.dead_lettered.increment(1);
                }
            }
            Settled::Deferred => self.deferred.increment(1),
        }
    }

    /// A handler is running until the guard drops (finished or aborted).
    pub(crate) fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.increment(1.0);
        InFlight(&self.in_flight)
    }
}

/// Counts a settlement made outside a subscriber (a [`TaskRef`](crate::TaskRef)
/// settled from elsewhere), with handles registered for this call alone.
pub(crate) fn settled_outside(stream: &str, consumer: &str, settled: Settled) {
    let labels = [("stream", stream.to_string()), ("consumer", consumer.to_string())];
    match settled {
        Settled::Acked => counter!(TASKS_ACKED, &labels).increment(1),
        Settled::AckRefused => counter!(ACKS_REFUSED, &labels).increment(1),
        Settled::Nacked { requeue, discarded } => {
            let mut with_requeue = labels.to_vec();
            with_requeue.push(("requeue", requeue.as_str().to_string()));
            counter!(TASKS_NACKED, &with_requeue).increment(1);
            if discarded {
                counter!(TASKS_DEAD_LETTERED, &labels).increment(1);
            }
        }
        Settled::Deferred => counter!(TASKS_DEFERRED, &labels).increment(1),
    }
}

/// Counts events published to `stream`.
pub(crate) fn published(stream: &str, events: usize) {
    counter!(EVENTS_PUBLISHED, "stream" => stream.to_string()).increment(events as u64);
}

/// Decrements [`TASKS_IN_FLIGHT`] when dropped.
pub(crate) struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
