//! The subscriber: the in-process worker of one consumer, as components with
//! one job each (River's services are the model):
//!
//! - [`driver`]: the loop that fetches, starts handlers and shuts down;
//! - [`fetcher`]: refill and claim in one round trip (`sluice.fetch_v2`);
//! - [`executor`]: runs one handler (payload, timeout, panic) and decides how
//!   its task is settled;
//! - [`completer`]: implicit acks, batched per flush, with bounded retries;
//! - [`keeper`]: the heartbeat, which is the worker's proof of life;
//! - [`registry`]: the tasks held, by (event, lease token);
//! - [`maintenance`]: scheduler, rescuer and cleaner of the consumer;
//! - [`notifier`]: one LISTEN connection per process and database.
//!
//! Everything in memory is bounded by concurrency + batch size, and every
//! database call of a component has a timeout and a bounded retry.

mod completer;
mod credit;
mod driver;
mod executor;
mod fetch_limit;
mod fetcher;
mod keeper;
mod maintenance;
mod notifier;
mod pace;

pub(crate) use maintenance::housekeep;
mod rates;

pub(crate) use completer::Acks;
pub(crate) use rates::Rates;
mod registry;
mod subscription;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rand::Rng;
use serde::de::DeserializeOwned;
use sqlx::{FromRow, PgPool};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::admin::{duration_ms, get_stream, ms_to_duration};
use crate::error::Error;
use crate::ids::WorkerId;
use crate::message::{HandlerError, Message};
use crate::metrics::Metrics;
use crate::pooler::on_pool;
use crate::sql;

pub use credit::Credit;
pub use fetch_limit::FetchLimit;
pub use subscription::{BackoffFn, Subscription};

pub(crate) use registry::Registry;

/// State shared by the subscriber's components and its messages.
pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) stream: String,
    pub(crate) consumer: String,
    pub(crate) consumer_id: i32,
    pub(crate) stream_id: i32,
    /// The consumer was ordered by key when the subscriber started.
    pub(crate) ordered_by_key: bool,
    /// Told when this worker's acks may have freed keys (ordered consumers
    /// only): the key's next task is made available by a refill, so the
    /// driver refills at once instead of at its next tick.
    pub(crate) keys_freed: tokio::sync::Notify,
    pub(crate) worker_id: Uuid,
    pub(crate) lease_ms: i64,
    pub(crate) dead_after: Duration,
    pub(crate) db_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    backoff: Option<BackoffFn>,
    /// The tasks this worker holds.
    pub(crate) registry: Registry,
    /// This subscription's metric handles, registered once.
    pub(crate) metrics: Metrics,
    pub(crate) stopping: AtomicBool,
    /// When the earliest task this worker scheduled (a retry, a deferral)
    /// falls due, so the driver wakes for it.
    due: Mutex<Option<Instant>>,
    events: broadcast::Sender<SubscriberEvent>,
}

impl Shared {
    /// A task this worker scheduled falls due in `wait_ms` (by the database's clock).
    pub(crate) fn scheduled_in(&self, wait_ms: i64) {
        // A little after, so the database's now() has passed it too.
        let at = Instant::now() + ms_to_duration(wait_ms) + Duration::from_millis(5);
        let mut due = self.due.lock().expect("due time poisoned");
        if due.is_none_or(|d| at < d) {
            *due = Some(at);
        }
    }

    /// Acks were written: on a consumer ordered by key, wake the driver to
    /// refill (and so move the freed keys on).
    pub(crate) fn acked(&self) {
        if self.ordered_by_key {
            self.keys_freed.notify_one();
        }
    }

    pub(crate) fn take_due(&self) -> Option<Instant> {
        self.due.lock().expect("due time poisoned").take()
    }

    pub(crate) fn retry_delay(&self, attempt: i32) -> Duration {
        if let Some(f) = &self.backoff {
            return f(attempt);
        }
        let exp = attempt.clamp(1, 31) as u32 - 1;
        let full = self.backoff_initial.saturating_mul(2u32.saturating_pow(exp)).min(self.backoff_max);
        // Jitter: somewhere in the upper half, so retries of a burst spread out.
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rand::rng().random::<f64>())
    }

    pub(crate) fn emit(&self, event: SubscriberEvent) {
        // No receiver is the common case: nothing waits, nothing is kept.
        let _ = self.events.send(event);
    }
}

/// What a subscriber did, for tests and monitoring: see
/// [`SubscriberHandle::events`]. Tests wait for these instead of sleeping.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriberEvent {
    /// A fetch returned: tasks claimed and events materialized.
    Fetched {
        /// Tasks claimed for this worker.
        claimed: usize,
        /// Tasks materialized by the refill.
        materialized: usize,
    },
    /// A flush of implicit acks was written.
    Flushed {
        /// Tasks completed.
        acked: usize,
        /// Acks refused because the lease had been lost meanwhile.
        lost: usize,
    },
    /// Acks that could not be written after every retry: those tasks are
    /// given up and come back to be handled again.
    AcksGivenUp {
        /// How many.
        tasks: usize,
    },
    /// A housekeeping run of the consumer.
    Maintained {
        /// Scheduled tasks that fell due.
        promoted: u64,
        /// Tasks freed from dead workers or ended leases.
        rescued: u64,
        /// Completed, discarded and cancelled tasks removed past their retention.
        purged: u64,
        /// Audit-log entries removed past their retention.
        log_purged: u64,
    },
    /// A heartbeat was recorded.
    Heartbeat,
    /// The subscriber stopped.
    Stopped,
}

/// What [`SubscriberHandle::shutdown`] did with the tasks this worker held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Handlers that finished during the shutdown.
    pub completed: usize,
    /// Claimed tasks whose handler never started, handed back at once.
    pub released: usize,
    /// Handlers still running at the deadline: stopped, their tasks handed back.
    pub aborted: usize,
    /// Tasks that could be neither settled nor handed back before the
    /// deadline: they come back once this worker is taken for dead.
    pub abandoned: usize,
}

/// A running subscriber. Dropping the handle leaves it running; call
/// [`SubscriberHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct SubscriberHandle {
    worker_id: WorkerId,
    stop: CancellationToken,
    deadline: Arc<Mutex<Duration>>,
    failure: Arc<OnceLock<Error>>,
    events: broadcast::Sender<SubscriberEvent>,
    driver: tokio::task::JoinHandle<ShutdownReport>,
}

impl SubscriberHandle {
    /// This subscriber's id in `sluice.workers`.
    pub fn worker_id(&self) -> WorkerId {
        self.worker_id
    }

    /// Whether the subscriber has stopped: asked to, or on an error it
    /// cannot get past ([`SubscriberHandle::error`]).
    pub fn is_finished(&self) -> bool {
        self.driver.is_finished()
    }

    /// The error that stopped the subscriber by itself: its consumer or
    /// stream was deleted ([`Error::ConsumerNotFound`]), or its position
    /// belongs to another cluster ([`Error::PositionAhead`]).
    pub fn error(&self) -> Option<&Error> {
        self.failure.get()
    }

    /// What the subscriber does from now on, as it happens. Events are
    /// dropped for a receiver that falls more than 1,024 behind.
    pub fn events(&self) -> broadcast::Receiver<SubscriberEvent> {
        self.events.subscribe()
    }

    /// Stops claiming, hands back claimed tasks no handler started, waits
    /// for running handlers, stops the rest and hands their tasks back,
    /// flushes pending acks and unregisters the worker: all within
    /// `deadline`, after which nothing of the subscriber is left running.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        *self.deadline.lock().expect("deadline poisoned") = deadline;
        self.stop.cancel();
        match self.driver.await {
            Ok(report) => report,
            Err(e) => {
                warn!(error = %e, "subscriber driver ended abnormally");
                ShutdownReport::default()
            }
        }
    }
}

#[derive(FromRow)]
struct ConsumerLookup {
    id: i32,
    backoff_initial_ms: i64,
    backoff_max_ms: i64,
    lease_ms: i64,
    stream_id: i32,
    ordered_by_key: bool,
}

/// Starts a subscriber for one consumer and returns its handle. Each task
/// matching the consumer is handed to `handler` as a [`Message`] with the
/// payload deserialized into `T`. `Ok` acks the task; an error retries it
/// after a backoff, or discards it ([`HandlerError::discard`]) — as does a
/// payload that does not deserialize into `T`. A panic is a failed attempt,
/// and so is a handler that outlives [`Subscription::handler_timeout`].
///
/// Many subscribers, in one process or many, may serve one consumer: each
/// task is held by one of them at a time.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// use sluice::{sub, Message, Subscription, HandlerError};
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// let handle = sub(&pool, Subscription::new("orders", "billing"), |msg: Message<Order>| async move {
///     println!("order {}", msg.payload().id);
///     Ok::<_, HandlerError>(())
/// })
/// .await?;
/// # handle.shutdown(std::time::Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
pub async fn sub<T, F, Fut>(pool: &PgPool, subscription: Subscription, handler: F) -> Result<SubscriberHandle, Error>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    // The running subscriber's span, made here so that it is a sibling of
    // the short `sluice.sub` span below rather than its child: it lives as
    // long as the subscriber, under the caller's span.
    let span = tracing::info_span!(
        "sluice.subscriber",
        stream = %subscription.stream,
        consumer = %subscription.consumer,
        worker = tracing::field::Empty
    );
    start(pool, subscription, handler, span).await
}

#[tracing::instrument(name = "sluice.sub", skip_all, fields(stream = %subscription.stream, consumer = %subscription.consumer))]
async fn start<T, F, Fut>(
    pool: &PgPool,
    subscription: Subscription,
    handler: F,
    span: tracing::Span,
) -> Result<SubscriberHandle, Error>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    subscription.validate()?;
    let lookup: Option<ConsumerLookup> = on_pool!(
        pool,
        sqlx::query_as(sql::CONSUMER_LOOKUP).bind(&subscription.stream).bind(&subscription.consumer),
        fetch_optional
    )
    .await
    .map_err(Error::db)?;
    let Some(lookup) = lookup else {
        get_stream(pool, &subscription.stream).await?;
        return Err(Error::ConsumerNotFound { stream: subscription.stream, consumer: subscription.consumer });
    };
    let lease_ms = match subscription.lease {
        Some(l) => duration_ms("lease", l)?,
        None => lookup.lease_ms,
    };
    duration_ms("dead_after", subscription.dead_after)?;
    let worker_id = Uuid::new_v4();
    let (events, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        stream: subscription.stream.clone(),
        consumer: subscription.consumer.clone(),
        consumer_id: lookup.id,
        stream_id: lookup.stream_id,
        ordered_by_key: lookup.ordered_by_key,
        keys_freed: tokio::sync::Notify::new(),
        worker_id,
        lease_ms,
        dead_after: subscription.dead_after,
        db_timeout: subscription.db_timeout,
        backoff_initial: ms_to_duration(lookup.backoff_initial_ms),
        backoff_max: ms_to_duration(lookup.backoff_max_ms),
        backoff: subscription.backoff.clone(),
        registry: Registry::default(),
        metrics: Metrics::new(&subscription.stream, &subscription.consumer),
        stopping: AtomicBool::new(false),
        due: Mutex::new(None),
        events: events.clone(),
    });
    keeper::register(&shared).await.map_err(Error::db)?;

    let stop = CancellationToken::new();
    let deadline = Arc::new(Mutex::new(Duration::ZERO));
    let failure = Arc::new(OnceLock::new());
    span.record("worker", tracing::field::display(worker_id));
    let driver =
        driver::Driver::new(shared, Arc::new(handler), subscription, stop.clone(), deadline.clone(), failure.clone());
    let driver = tokio::spawn(driver.run().instrument(span));
    info!(%worker_id, "subscriber started");
    Ok(SubscriberHandle { worker_id: WorkerId(worker_id), stop, deadline, failure, events, driver })
}

/// Runs one of the subscriber's own database calls with its time limit.
pub(crate) async fn timed<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} took longer than {limit:?}"),
        ))),
    }
}

/// Whether trying again may succeed: a lost or refused connection, a
/// timeout, a serialization failure or deadlock, a server shutting down.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") // connection exceptions
                || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                || matches!(&*code, "40001" | "40P01" | "53300" | "55P03")
        }),
        _ => false,
    }
}

/// Exponential backoff for failing database calls: 100 ms doubling to 30 s.
pub(crate) struct ErrorBackoff(Duration);

impl ErrorBackoff {
    pub(crate) fn new() -> Self {
        ErrorBackoff(Duration::ZERO)
    }

    pub(crate) fn next(&mut self) -> Duration {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        self.0
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// The host name Sluice records for its workers (and the gateway for its
/// clients): `HOSTNAME`, else the kernel's, else `unknown`.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "unknown".to_string())
}
