//! What a metrics recorder sees of a subscriber's work: one of each outcome
//! (an implicit and a transactional ack, nacks, a deferral, a retried failure,
//! a dead letter, an ack refused by fencing and the rescue that follows it),
//! counted under the names sluice::metrics documents.
//!
//! The subscriber runs on tasks of its own, so the recorder is this test
//! binary's global one; each test's series are told apart by consumer name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use serde_json::{json, Value};
use sluice::metrics as m;
use sluice::{
    create_consumer, create_stream, publish, sub, ConsumerOptions, Defer, HandlerError, Message, Nack, NewEvent,
    StreamOptions, Subscription,
};
use support::{wait_until, TestDb};

const WAIT: Duration = Duration::from_secs(30);

/// One series: its name and labels, sorted.
type Series = (String, Vec<(String, String)>);

/// A recorder that keeps every value, for the test to read.
#[derive(Clone, Default)]
struct Recorded {
    counters: Arc<Mutex<HashMap<Series, Arc<AtomicU64>>>>,
    gauges: Arc<Mutex<HashMap<Series, Arc<AtomicU64>>>>,
    histograms: Arc<Mutex<HashMap<Series, Arc<Samples>>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

fn series(key: &Key) -> Series {
    let mut labels: Vec<(String, String)> =
        key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
    labels.sort();
    (key.name().to_string(), labels)
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.counters.lock().unwrap().entry(series(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.gauges.lock().unwrap().entry(series(key)).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.histograms.lock().unwrap().entry(series(key)).or_default().clone())
    }
}

/// Whether a series carries every one of `labels`.
fn matches(series: &Series, name: &str, labels: &[(&str, &str)]) -> bool {
    series.0 == name && labels.iter().all(|(k, v)| series.1.iter().any(|(sk, sv)| sk == k && sv == v))
}

impl Recorded {
    /// The global recorder of this test binary.
    fn get() -> &'static Recorded {
        static RECORDED: OnceLock<Recorded> = OnceLock::new();
        RECORDED.get_or_init(|| {
            let recorded = Recorded::default();
            metrics::set_global_recorder(recorded.clone()).expect("no other recorder in this test binary");
            recorded
        })
    }

    /// The sum of the counters `name` with these labels.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let counters = self.counters.lock().unwrap();
        counters.iter().filter(|(s, _)| matches(s, name, labels)).map(|(_, v)| v.load(Ordering::Relaxed)).sum()
    }

    /// The value of the gauge `name` with these labels.
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let gauges = self.gauges.lock().unwrap();
        gauges
            .iter()
            .filter(|(s, _)| matches(s, name, labels))
            .map(|(_, v)| f64::from_bits(v.load(Ordering::Relaxed)))
            .sum()
    }

    /// The samples of the histograms `name` with these labels.
    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let histograms = self.histograms.lock().unwrap();
        histograms
            .iter()
            .filter(|(s, _)| matches(s, name, labels))
            .flat_map(|(_, v)| v.0.lock().unwrap().clone())
            .collect()
    }
}

#[tokio::test]
async fn a_recorder_counts_every_outcome_of_a_subscribers_tasks() {
    let recorded = Recorded::get();
    let db = TestDb::new().await;
    create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();
    let options = ConsumerOptions::default().backoff(Duration::from_millis(10), Duration::from_millis(10));
    create_consumer(&db.pool, "orders", "metered", options).await.unwrap();
    let task = [("stream", "orders"), ("consumer", "metered")];

    let kinds = ["ok", "ack_tx", "requeue", "discard", "fail", "dead", "defer", "refused"];
    for kind in kinds {
        publish(&db.pool, "orders", NewEvent::new("orders.eu.created", &json!({ "kind": kind })).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(recorded.counter(m::EVENTS_PUBLISHED, &[("stream", "orders")]), kinds.len() as u64);

    let in_flight_seen = Arc::new(Mutex::new(None));
    let seen = in_flight_seen.clone();
    let pool = db.pool.clone();
    let subscription = Subscription::new("orders", "metered").poll_interval(Duration::from_millis(100));
    let handle = sub(&db.pool, subscription, move |msg: Message<Value>| {
        let (pool, seen) = (pool.clone(), seen.clone());
        async move {
            let first = msg.attempt() == 1;
            match msg.payload()["kind"].as_str().unwrap() {
                "ok" => {
                    *seen.lock().unwrap() = Some(Recorded::get().gauge(m::TASKS_IN_FLIGHT, &task));
                }
                "ack_tx" => {
                    let mut tx = pool.begin().await?;
                    msg.ack_tx(&mut *tx).await?;
                    tx.commit().await?;
                }
                "requeue" if first => {
                    msg.nack(Nack::requeue_start()).await?;
                }
                "discard" => {
                    msg.nack(Nack::discard("malformed")).await?;
                }
                "fail" if first => return Err(HandlerError::new("downstream unavailable")),
                "dead" => return Err(HandlerError::discard("no retry can fix this")),
                "defer" if first => {
                    msg.defer(Defer::by(Duration::from_millis(10))).await?;
                }
                "refused" if first => {
                    // Another worker's claim, as after a lease lost: a new
                    // token under a worker that does not exist, its lease
                    // over. The implicit ack is refused; the rescuer frees it.
                    sqlx::query(
                        "UPDATE sluice.tasks SET lease_token = nextval('sluice.lease_token'), \
                         worker_id = gen_random_uuid(), lease_until = now() WHERE event_id = $1",
                    )
                    .bind(msg.id().0)
                    .execute(&pool)
                    .await?;
                }
                _ => {}
            }
            Ok(())
        }
    })
    .await
    .unwrap();

    // ok, ack_tx, and the second attempts of requeue, fail, defer and refused.
    wait_until(WAIT, "six acks, a refused one and a rescue", || async {
        recorded.counter(m::TASKS_ACKED, &task) >= 6
            && recorded.counter(m::ACKS_REFUSED, &task) >= 1
            && recorded.counter(m::TASKS_RESCUED, &task) >= 1
    })
    .await;
    handle.shutdown(Duration::from_secs(10)).await;

    assert_eq!(recorded.counter(m::TASKS_ACKED, &task), 6);
    assert_eq!(recorded.counter(m::ACKS_REFUSED, &task), 1);
    assert_eq!(recorded.counter(m::TASKS_RESCUED, &task), 1);
    assert_eq!(recorded.counter(m::TASKS_NACKED, &[task[0], task[1], ("requeue", "start")]), 1);
    assert_eq!(recorded.counter(m::TASKS_NACKED, &[task[0], task[1], ("requeue", "none")]), 1);
    assert_eq!(recorded.counter(m::TASKS_NACKED, &[task[0], task[1], ("requeue", "end")]), 0);
    assert_eq!(recorded.counter(m::TASKS_DEFERRED, &task), 1);
    // fail's first attempt and dead; dead and discard are dead letters.
    assert_eq!(recorded.counter(m::TASKS_FAILED, &task), 2);
    assert_eq!(recorded.counter(m::TASKS_DEAD_LETTERED, &task), 2);
    // Eight first attempts, and second ones for requeue, fail, defer and refused.
    assert_eq!(recorded.counter(m::TASKS_CLAIMED, &task), 12);
    let outcome = |o| recorded.samples(m::HANDLER_DURATION, &[task[0], task[1], ("outcome", o)]).len();
    assert_eq!((outcome("ok"), outcome("error"), outcome("panic"), outcome("timeout")), (10, 2, 0, 0));
    // Only first attempts are measured from publication.
    let waits = recorded.samples(m::WAIT_DURATION, &task);
    assert_eq!(waits.len(), kinds.len());
    assert!(waits.iter().all(|w| *w >= 0.0));
    assert!(!recorded.samples(m::FETCH_DURATION, &task).is_empty());
    assert!(in_flight_seen.lock().unwrap().is_some_and(|n| n >= 1.0), "a running handler is in flight");
    assert_eq!(recorded.gauge(m::TASKS_IN_FLIGHT, &task), 0.0);

    // No series carries an id, a subject or an error.
    let counters = recorded.counters.lock().unwrap().keys().cloned().collect::<Vec<_>>();
    let gauges = recorded.gauges.lock().unwrap().keys().cloned().collect::<Vec<_>>();
    let histograms = recorded.histograms.lock().unwrap().keys().cloned().collect::<Vec<_>>();
    for (name, labels) in counters.iter().chain(&gauges).chain(&histograms) {
        assert!(m::NAMES.contains(&name.as_str()), "{name} is listed in NAMES");
        for (key, _) in labels {
            assert!(["stream", "consumer", "requeue", "outcome"].contains(&key.as_str()), "{name} has label {key}");
        }
    }
}

#[tokio::test]
async fn the_xmin_horizon_age_follows_the_oldest_open_transaction() {
    let db = TestDb::new().await;
    let age = || async { m::xmin_horizon_age(&db.pool).await.unwrap() };
    // A transaction with an id, left open as an idle client would.
    let mut open = db.direct.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *open).await.unwrap();
    wait_until(WAIT, "the open transaction to hold the horizon for a second", || async {
        age().await.is_some_and(|a| a >= Duration::from_secs(1))
    })
    .await;
    open.commit().await.unwrap();
    wait_until(WAIT, "the horizon to be released", || async { age().await.is_none_or(|a| a < Duration::from_secs(1)) })
        .await;
}
