//! The subscriber: the in-process worker loop of one consumer.
//!
//! One driver task refills the consumer (moves its position and materializes
//! tasks), claims batches into a bounded local buffer and starts handlers up
//! to the concurrency limit. Beside it: a listener (LISTEN on the stream's
//! channel), an acker (implicit acks, one statement per flush) and a keeper
//! (lease extension and heartbeat). Everything in memory is bounded by
//! concurrency + batch size.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use rand::Rng;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgListener;
use sqlx::{FromRow, PgPool};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

use crate::admin::{duration_ms, get_stream, ms_to_duration};
use crate::error::{Error, InvalidInput};
use crate::ids::{EventId, Priority, WorkerId};
use crate::message::{ack_tasks, HandlerError, Message, TaskRef, ACKED, UNSETTLED};
use crate::sql;
use crate::subject::check_name;

/// A retry delay computed from the attempt number that failed (1 for the first).
pub type BackoffFn = Arc<dyn Fn(i32) -> Duration + Send + Sync>;

/// What a subscriber works on and how. Required: the stream and the consumer.
///
/// ```
/// use std::time::Duration;
/// let subscription = sluice::Subscription::new("orders", "billing")
///     .concurrency(32)
///     .batch_size(200)
///     .poll_interval(Duration::from_millis(500));
/// ```
#[derive(Clone)]
pub struct Subscription {
    stream: String,
    consumer: String,
    concurrency: usize,
    batch_size: usize,
    poll_interval: Duration,
    lease: Option<Duration>,
    heartbeat: Duration,
    dead_after: Duration,
    refill_chunk: i32,
    prefetch: Option<usize>,
    backoff: Option<BackoffFn>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("concurrency", &self.concurrency)
            .field("batch_size", &self.batch_size)
            .field("poll_interval", &self.poll_interval)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .field("dead_after", &self.dead_after)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription to consumer `consumer` of stream `stream`, with defaults:
    /// concurrency 16, batch size 100, poll interval 1 s, the consumer's lease.
    pub fn new(stream: impl Into<String>, consumer: impl Into<String>) -> Self {
        Subscription {
            stream: stream.into(),
            consumer: consumer.into(),
            concurrency: 16,
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            lease: None,
            heartbeat: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            refill_chunk: 10_000,
            prefetch: None,
            backoff: None,
        }
    }

    /// How many handlers run at once (default 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How many tasks one claim takes at most (default 100). At most this
    /// many claimed tasks wait in memory for a free handler.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// How often to look for work when no notification arrives, and to run
    /// housekeeping (default 1 s). Notifications wake the subscriber at once.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The visibility timeout of the tasks this subscriber claims (default:
    /// the consumer's). Extended while handlers run.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How often the worker reports that it is alive (default 5 s).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// After how long without a heartbeat another subscriber frees a worker's
    /// tasks (default 15 s).
    pub fn dead_after(mut self, after: Duration) -> Self {
        self.dead_after = after;
        self
    }

    /// How many events one refill statement materializes at most (default
    /// 10,000); a larger backlog is worked through in chunks of this size.
    pub fn refill_chunk(mut self, events: i32) -> Self {
        self.refill_chunk = events;
        self
    }

    /// How many claimed tasks may wait in memory for a free handler
    /// (default: the batch size). Zero claims only for idle handlers, so
    /// tasks are started in exactly the order they are claimed.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// Replaces the consumer's exponential backoff with a function of the
    /// attempt number that failed.
    pub fn backoff(mut self, backoff: impl Fn(i32) -> Duration + Send + Sync + 'static) -> Self {
        self.backoff = Some(Arc::new(backoff));
        self
    }

    fn validate(&self) -> Result<(), InvalidInput> {
        check_name("stream", &self.stream)?;
        check_name("consumer", &self.consumer)?;
        let setting = |setting, reason: &str| Err(InvalidInput::Setting { setting, reason: reason.into() });
        if self.concurrency == 0 {
            return setting("concurrency", "at least 1 handler must be allowed to run");
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return setting("batch_size", "a batch is 1 to 10,000 tasks");
        }
        if self.poll_interval.is_zero() {
            return setting("poll_interval", "must be more than zero");
        }
        if self.lease.is_some_and(|l| l < Duration::from_secs(1)) {
            return setting("lease", "a lease is at least 1 second");
        }
        if self.heartbeat.is_zero() || self.dead_after <= self.heartbeat {
            return setting("dead_after", "must be longer than the heartbeat interval");
        }
        if self.refill_chunk < 1 {
            return setting("refill_chunk", "at least 1 event per refill");
        }
        Ok(())
    }
}

/// State shared by the subscriber's tasks and its messages.
pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) stream: String,
    pub(crate) consumer: String,
    pub(crate) consumer_id: i32,
    stream_id: i32,
    worker_id: Uuid,
    lease_ms: i64,
    backoff_initial: Duration,
    backoff_max: Duration,
    backoff: Option<BackoffFn>,
    /// Tasks this worker holds (event id → attempt): claimed, running, or
    /// waiting for their ack to be flushed. The keeper extends their leases.
    in_flight: Mutex<HashMap<i64, i32>>,
    stopping: AtomicBool,
    /// The earliest due time of a task this worker scheduled (a retry or a
    /// deferral) since the driver last looked, so it wakes up for it.
    due_hint: Mutex<Option<DateTime<Utc>>>,
}

impl Shared {
    pub(crate) fn scheduled(&self, due: DateTime<Utc>) {
        let mut hint = self.due_hint.lock().expect("due hint poisoned");
        if hint.is_none_or(|h| due < h) {
            *hint = Some(due);
        }
    }

    fn forget(&self, event_id: i64) {
        self.in_flight.lock().expect("in-flight map poisoned").remove(&event_id);
    }

    fn retry_delay(&self, attempt: i32) -> Duration {
        if let Some(f) = &self.backoff {
            return f(attempt);
        }
        let exp = attempt.clamp(1, 31) as u32 - 1;
        let full = self.backoff_initial.saturating_mul(2u32.saturating_pow(exp)).min(self.backoff_max);
        // Jitter: somewhere in the upper half, so retries of a burst spread out.
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rand::rng().random::<f64>())
    }
}

/// What [`SubscriberHandle::shutdown`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Claimed tasks whose handler never started, handed back at once.
    pub released: usize,
    /// Handlers still running at the deadline: stopped, their tasks handed back.
    pub aborted: usize,
}

/// A running subscriber. Dropping the handle leaves it running; call
/// [`SubscriberHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct SubscriberHandle {
    worker_id: WorkerId,
    stop: CancellationToken,
    deadline: Arc<Mutex<Duration>>,
    driver: tokio::task::JoinHandle<ShutdownReport>,
}

impl SubscriberHandle {
    /// This subscriber's id in `sluice.workers`.
    pub fn worker_id(&self) -> WorkerId {
        self.worker_id
    }

    /// Whether the subscriber has stopped.
    pub fn is_finished(&self) -> bool {
        self.driver.is_finished()
    }

    /// Stops claiming, hands back claimed tasks no handler started, waits up
    /// to `deadline` for running handlers, stops the rest and hands their
    /// tasks back, flushes pending acks and unregisters the worker.
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
    #[allow(dead_code)]
    max_attempts: i32,
    backoff_initial_ms: i64,
    backoff_max_ms: i64,
    lease_ms: i64,
    stream_id: i32,
}

struct ClaimedRow {
    event_id: i64,
    attempt: i32,
    priority: i16,
    subject: String,
    payload: String,
    metadata: String,
    key: Option<String>,
    created_at: DateTime<Utc>,
}

/// Starts a subscriber for one consumer and returns its handle. Each task
/// matching the consumer is handed to `handler` as a [`Message`] with the
/// payload deserialized into `T`. `Ok` acks the task; an error retries it
/// after a backoff, or discards it ([`HandlerError::discard`]) — as does a
/// payload that does not deserialize into `T`. A panic is a failed attempt.
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
    subscription.validate()?;
    let lookup: Option<ConsumerLookup> = sqlx::query_as(sql::CONSUMER_LOOKUP)
        .bind(&subscription.stream)
        .bind(&subscription.consumer)
        .fetch_optional(pool)
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
    let worker_id = Uuid::new_v4();
    register_worker(pool, worker_id, lookup.id).await.map_err(Error::db)?;

    let shared = Arc::new(Shared {
        pool: pool.clone(),
        stream: subscription.stream.clone(),
        consumer: subscription.consumer.clone(),
        consumer_id: lookup.id,
        stream_id: lookup.stream_id,
        worker_id,
        lease_ms,
        backoff_initial: ms_to_duration(lookup.backoff_initial_ms),
        backoff_max: ms_to_duration(lookup.backoff_max_ms),
        backoff: subscription.backoff.clone(),
        in_flight: Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
        due_hint: Mutex::new(None),
    });
    let stop = CancellationToken::new();
    let deadline = Arc::new(Mutex::new(Duration::ZERO));
    let span = tracing::info_span!("sluice.subscriber", stream = %shared.stream, consumer = %shared.consumer, worker = %worker_id);
    let driver = Driver {
        shared,
        handler: Arc::new(handler),
        sub: subscription,
        stop: stop.clone(),
        deadline: deadline.clone(),
        _payload: std::marker::PhantomData,
    };
    let driver = tokio::spawn(driver.run().instrument(span));
    info!(%worker_id, "subscriber started");
    Ok(SubscriberHandle { worker_id: WorkerId(worker_id), stop, deadline, driver })
}

/// Registers (or revives) this process's worker row for the consumer.
async fn register_worker(pool: &PgPool, worker_id: Uuid, consumer_id: i32) -> Result<(), sqlx::Error> {
    sqlx::query(sql::WORKER_REGISTER)
        .bind(worker_id)
        .bind(consumer_id)
        .bind(hostname())
        .bind(std::process::id() as i32)
        .execute(pool)
        .await
        .map(|_| ())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "unknown".to_string())
}

struct Driver<T, F> {
    shared: Arc<Shared>,
    handler: Arc<F>,
    sub: Subscription,
    stop: CancellationToken,
    deadline: Arc<Mutex<Duration>>,
    _payload: std::marker::PhantomData<fn() -> T>,
}

/// Exponential backoff for database errors: 100 ms doubling to 30 s.
struct ErrorBackoff(Duration);

impl ErrorBackoff {
    fn new() -> Self {
        ErrorBackoff(Duration::ZERO)
    }
    fn next(&mut self) -> Duration {
        self.0 = (self.0 * 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        self.0
    }
    fn reset(&mut self) {
        self.0 = Duration::ZERO;
    }
}

impl<T, F, Fut> Driver<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn run(self) -> ShutdownReport {
        let shared = self.shared.clone();
        let helpers_stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let (ack_tx, ack_rx) = mpsc::channel::<(i64, i32)>(self.sub.concurrency + self.sub.batch_size);
        let acker = tokio::spawn(acker(shared.clone(), ack_rx).in_current_span());
        let keeper = tokio::spawn(keeper(shared.clone(), self.sub.heartbeat, helpers_stop.clone()).in_current_span());
        let listener = tokio::spawn(listener(shared.clone(), wake.clone(), helpers_stop.clone()).in_current_span());

        let concurrency = self.sub.concurrency;
        let batch = self.sub.batch_size;
        let prefetch = self.sub.prefetch.unwrap_or(batch);
        let mut buffer: VecDeque<ClaimedRow> = VecDeque::with_capacity(batch);
        let mut running: JoinSet<()> = JoinSet::new();
        let mut running_keys: HashMap<tokio::task::Id, (i64, i32)> = HashMap::new();
        // dirty: the stream may hold events not yet materialized.
        // idle: the last fetch found nothing, so wait for news before the next.
        let mut dirty = true;
        let mut idle = false;
        let mut pause_until: Option<Instant> = None;
        let mut errors = ErrorBackoff::new();
        let mut next_tick = Instant::now() + self.sub.poll_interval;
        let mut next_maintenance = Instant::now();
        // At most one fetch runs at a time, beside the handlers: while it
        // waits on the database, handlers keep starting from the buffer.
        let mut fetching: Option<tokio::task::JoinHandle<Result<Fetched, sqlx::Error>>> = None;
        let mut maintaining: Option<tokio::task::JoinHandle<Result<Maintained, sqlx::Error>>> = None;

        loop {
            while running.len() < concurrency {
                let Some(row) = buffer.pop_front() else { break };
                let key = (row.event_id, row.attempt);
                let handle = running.spawn(self.handle(row, ack_tx.clone()).in_current_span());
                running_keys.insert(handle.id(), key);
            }
            if self.stop.is_cancelled() {
                break;
            }
            if let Some(due) = shared.due_hint.lock().expect("due hint poisoned").take() {
                next_maintenance = next_maintenance.min(instant_of(due));
            }
            let now = Instant::now();
            let db_ok = pause_until.is_none_or(|t| now >= t);
            // Housekeeping runs beside the handlers too, one run at a time: a
            // slow run (a lock, stale statistics) must not stall handling.
            if maintaining.is_none() && db_ok && now >= next_maintenance {
                let task = maintain(shared.clone(), self.sub.dead_after);
                maintaining = Some(tokio::spawn(task.in_current_span()));
            }
            // Fetch when a good part of a batch fits, or when handlers would idle.
            let room = (concurrency + prefetch).saturating_sub(running.len() + buffer.len());
            let worth_it = room >= (batch / 2).max(1) || (room > 0 && buffer.is_empty());
            if fetching.is_none() && db_ok && worth_it && (dirty || !idle) {
                let n = room.min(batch);
                let task = fetch(shared.clone(), self.sub.refill_chunk, n, dirty);
                fetching = Some(tokio::spawn(task.in_current_span()));
                dirty = false;
            }

            let pause = pause_until.unwrap_or(next_tick);
            tokio::select! {
                _ = self.stop.cancelled() => {}
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                    running_keys.remove(&id);
                }
                result = async { fetching.as_mut().expect("guarded").await }, if fetching.is_some() => {
                    fetching = None;
                    match result.unwrap_or_else(|e| Err(sqlx::Error::Protocol(format!("fetch task failed: {e}")))) {
                        Ok(fetched) => {
                            errors.reset();
                            if fetched.busy {
                                // Another subscriber is refilling: look again
                                // shortly, in case events came after its snapshot.
                                dirty = true;
                                pause_until = Some(Instant::now() + Duration::from_millis(5));
                            }
                            dirty |= fetched.more;
                            idle = fetched.rows.is_empty() && !dirty;
                            self.hold(&fetched.rows);
                            buffer.extend(fetched.rows);
                        }
                        Err(e) => {
                            let wait = errors.next();
                            warn!(error = %e, retry_in = ?wait, "fetching tasks failed");
                            dirty = true;
                            pause_until = Some(Instant::now() + wait);
                        }
                    }
                }
                result = async { maintaining.as_mut().expect("guarded").await }, if maintaining.is_some() => {
                    maintaining = None;
                    next_maintenance = Instant::now() + self.sub.poll_interval;
                    match result.unwrap_or_else(|e| Err(sqlx::Error::Protocol(format!("housekeeping task failed: {e}")))) {
                        Ok((freed, next_due)) => {
                            if freed {
                                idle = false;
                            }
                            // Wake up for the next scheduled task rather than a tick later.
                            if let Some(due) = next_due {
                                next_maintenance = next_maintenance.min(instant_of(due));
                            }
                        }
                        Err(e) => warn!(error = %e, "housekeeping failed"),
                    }
                }
                _ = wake.notified() => { dirty = true; idle = false; }
                _ = sleep_until(next_tick) => {
                    dirty = true;
                    idle = false;
                    next_tick = Instant::now() + self.sub.poll_interval;
                }
                _ = sleep_until(pause), if pause_until.is_some() => { pause_until = None; }
                _ = sleep_until(next_maintenance), if pause_until.is_none() && maintaining.is_none() => {}
            }
        }

        // A fetch still under way may have claimed tasks: take them, to hand back.
        if let Some(handle) = fetching.take() {
            if let Ok(Ok(fetched)) = handle.await {
                self.hold(&fetched.rows);
                buffer.extend(fetched.rows);
            }
        }

        // Shutdown: stop claiming, hand back what never started, wait for the rest.
        shared.stopping.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + *self.deadline.lock().expect("deadline poisoned");
        let unstarted: Vec<(i64, i32, bool)> = buffer.drain(..).map(|r| (r.event_id, r.attempt, false)).collect();
        let released = unstarted.len();
        self.release(&unstarted).await;
        loop {
            tokio::select! {
                done = running.join_next_with_id() => match done {
                    None => break,
                    Some(done) => {
                        let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                        running_keys.remove(&id);
                    }
                },
                _ = sleep_until(deadline) => break,
            }
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
        let stopped: Vec<(i64, i32, bool)> = running_keys.values().map(|&(e, a)| (e, a, true)).collect();
        let aborted = stopped.len();
        self.release(&stopped).await;
        drop(ack_tx);
        // Give the acker until the deadline (and a little) to flush what is left.
        let grace = deadline.max(Instant::now()) + Duration::from_secs(5);
        if tokio::time::timeout_at(grace, acker).await.is_err() {
            warn!("pending acks not flushed before the deadline; their tasks come back when their leases end");
        }
        helpers_stop.cancel();
        let _ = keeper.await;
        let _ = listener.await;
        if let Err(e) = sqlx::query(sql::WORKER_UNREGISTER).bind(shared.worker_id).execute(&shared.pool).await {
            warn!(error = %e, "could not unregister the worker; it will be forgotten once its heartbeat is stale");
        }
        info!(released, aborted, "subscriber stopped");
        ShutdownReport { released, aborted }
    }

    fn handle(&self, row: ClaimedRow, acks: mpsc::Sender<(i64, i32)>) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        let handler = self.handler.clone();
        async move {
            let (event_id, attempt) = (row.event_id, row.attempt);
            let payload = match serde_json::from_str::<T>(&row.payload) {
                Ok(p) => p,
                Err(e) => {
                    let error = format!(
                        "payload of event {event_id} does not deserialize into {}: {e}",
                        std::any::type_name::<T>()
                    );
                    warn!(event_id, %error, "discarding task");
                    fail(&shared, event_id, attempt, &error, false).await;
                    shared.forget(event_id);
                    return;
                }
            };
            let settled = Arc::new(AtomicU8::new(UNSETTLED));
            let msg = Message {
                task: TaskRef {
                    stream: shared.stream.clone(),
                    consumer: shared.consumer.clone(),
                    consumer_id: shared.consumer_id,
                    event_id: EventId(event_id),
                    attempt,
                    worker_id: WorkerId(shared.worker_id),
                },
                subject: row.subject,
                payload,
                metadata: serde_json::from_str(&row.metadata).unwrap_or_default(),
                key: row.key,
                created_at: row.created_at,
                priority: Priority::from_db(row.priority),
                shared: shared.clone(),
                settled: settled.clone(),
            };
            let outcome = AssertUnwindSafe(handler(msg)).catch_unwind().await;
            let how = settled.load(Ordering::Acquire);
            match outcome {
                Ok(Ok(())) if how == UNSETTLED => {
                    if acks.send((event_id, attempt)).await.is_err() {
                        shared.forget(event_id);
                    }
                    return;
                }
                // Acked explicitly; with ack_tx the caller's commit decides,
                // and if it rolled back the lease brings the task back.
                Ok(Ok(())) => {}
                Ok(Err(e)) if how == ACKED => {
                    warn!(event_id, error = %e, "handler failed after settling its task; the settlement stands");
                }
                Ok(Err(e)) => fail(&shared, event_id, attempt, e.message(), e.is_retryable()).await,
                Err(panic) if how == ACKED => {
                    warn!(event_id, panic = %panic_message(&panic), "handler panicked after settling its task; the settlement stands");
                }
                Err(panic) => {
                    let error = format!("handler panicked: {}", panic_message(&panic));
                    fail(&shared, event_id, attempt, &error, true).await;
                }
            }
            shared.forget(event_id);
        }
    }

    /// Records claimed tasks as held, so the keeper extends their leases.
    fn hold(&self, rows: &[ClaimedRow]) {
        if rows.is_empty() {
            return;
        }
        let mut held = self.shared.in_flight.lock().expect("in-flight map poisoned");
        for r in rows {
            held.insert(r.event_id, r.attempt);
        }
    }

    async fn release(&self, tasks: &[(i64, i32, bool)]) {
        if tasks.is_empty() {
            return;
        }
        let events: Vec<i64> = tasks.iter().map(|t| t.0).collect();
        let attempts: Vec<i32> = tasks.iter().map(|t| t.1).collect();
        let started: Vec<bool> = tasks.iter().map(|t| t.2).collect();
        let result = sqlx::query_scalar::<_, i64>(sql::RELEASE)
            // Planned for each call's own arrays, as the ack is (see ack_tasks).
            .persistent(false)
            .bind(self.shared.consumer_id)
            .bind(&events)
            .bind(&attempts)
            .bind(self.shared.worker_id)
            .bind(&started)
            .fetch_one(&self.shared.pool)
            .await;
        match result {
            Ok(n) => debug!(released = n, "handed tasks back"),
            Err(e) => warn!(error = %e, "could not hand tasks back; they come back when their leases end"),
        }
        let mut held = self.shared.in_flight.lock().expect("in-flight map poisoned");
        for e in events {
            held.remove(&e);
        }
    }
}

/// Refills the consumer (when `refill`) and claims up to `n` tasks, in
/// one round trip; the tasks come back in claim order.
async fn fetch(shared: Arc<Shared>, refill_chunk: i32, n: usize, refill: bool) -> Result<Fetched, sqlx::Error> {
    let started = std::time::Instant::now();
    let row: FetchRow = sqlx::query_as(sql::FETCH)
        .bind(shared.consumer_id)
        .bind(shared.worker_id)
        .bind(shared.lease_ms)
        .bind(n as i32)
        .bind(refill_chunk)
        .bind(refill)
        .fetch_one(&shared.pool)
        .await?;
    tracing::trace!(
        asked = n,
        claimed = row.event_ids.len(),
        materialized = row.materialized,
        more = row.more,
        busy = row.busy,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "fetched"
    );
    let FetchRow {
        more,
        busy,
        event_ids,
        attempts,
        priorities,
        positions,
        subjects,
        payloads,
        metadata,
        keys,
        created_ats,
        ..
    } = row;
    let (mut subjects, mut payloads, mut metadata, mut keys) =
        (subjects.into_iter(), payloads.into_iter(), metadata.into_iter(), keys.into_iter());
    let mut rows: Vec<(i64, ClaimedRow)> = Vec::with_capacity(event_ids.len());
    for (i, &event_id) in event_ids.iter().enumerate() {
        let claimed = ClaimedRow {
            event_id,
            attempt: attempts[i],
            priority: priorities[i],
            subject: subjects.next().unwrap_or_default(),
            payload: payloads.next().flatten().unwrap_or_else(|| "null".into()),
            metadata: metadata.next().flatten().unwrap_or_else(|| "{}".into()),
            key: keys.next().flatten(),
            created_at: created_ats[i],
        };
        rows.push((positions[i], claimed));
    }
    rows.sort_by_key(|(position, r)| (std::cmp::Reverse(r.priority), *position));
    Ok(Fetched { more, busy, rows: rows.into_iter().map(|(_, r)| r).collect() })
}

/// Whether tasks became available, and when the next scheduled one is due.
type Maintained = (bool, Option<DateTime<Utc>>);

/// One housekeeping run for the consumer (see maintain.sql).
async fn maintain(shared: Arc<Shared>, dead_after: Duration) -> Result<Maintained, sqlx::Error> {
    let (promoted, expired, forgotten, purged, _woken, next_due): (i64, i64, i64, i64, i64, Option<DateTime<Utc>>) =
        sqlx::query_as(sql::MAINTAIN)
            .bind(shared.consumer_id)
            .bind(dead_after.as_millis() as i64)
            .bind(1000_i64)
            .fetch_one(&shared.pool)
            .await?;
    if expired > 0 || forgotten > 0 {
        info!(expired, forgotten, "freed tasks of lost leases and stopped workers");
    }
    if promoted > 0 || purged > 0 {
        debug!(promoted, purged, "housekeeping");
    }
    Ok((promoted > 0 || expired > 0, next_due))
}

/// The monotonic instant of a wall-clock time, a little after it so the
/// database's `now()` has passed it too.
fn instant_of(due: DateTime<Utc>) -> Instant {
    let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + wait + Duration::from_millis(5)
}

struct Fetched {
    more: bool,
    busy: bool,
    rows: Vec<ClaimedRow>,
}

#[derive(FromRow)]
struct FetchRow {
    materialized: i32,
    more: bool,
    busy: bool,
    event_ids: Vec<i64>,
    attempts: Vec<i32>,
    priorities: Vec<i16>,
    positions: Vec<i64>,
    subjects: Vec<String>,
    payloads: Vec<Option<String>>,
    metadata: Vec<Option<String>>,
    keys: Vec<Option<String>>,
    created_ats: Vec<DateTime<Utc>>,
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Records a failed attempt: a retry after the backoff, or a discard.
async fn fail(shared: &Shared, event_id: i64, attempt: i32, error: &str, retry: bool) {
    // A handler's message may hold anything; Postgres text cannot hold NUL.
    let error = error.replace('\0', "\u{FFFD}");
    let error = error.as_str();
    let delay = shared.retry_delay(attempt).min(crate::admin::MAX_DURATION);
    let result = sqlx::query_as::<_, (String, Option<DateTime<Utc>>)>(sql::FAIL)
        .bind(shared.consumer_id)
        .bind(event_id)
        .bind(attempt)
        .bind(shared.worker_id)
        .bind(error)
        .bind(delay.as_millis() as i64)
        .bind(!retry)
        .fetch_optional(&shared.pool)
        .await;
    match result {
        Ok(Some((state, due))) => {
            if let Some(due) = due {
                shared.scheduled(due);
            }
            debug!(event_id, attempt, %state, error, "attempt failed");
        }
        Ok(None) => warn!(event_id, attempt, "attempt failed after its lease was lost; nothing recorded"),
        Err(e) => {
            warn!(event_id, attempt, error = %e, "could not record a failed attempt; the lease will bring the task back")
        }
    }
}

/// Flushes implicit acks: whatever has queued up while the last flush ran
/// goes in the next statement, so batches grow with load and an idle
/// subscriber acks at once.
async fn acker(shared: Arc<Shared>, mut rx: mpsc::Receiver<(i64, i32)>) {
    const MAX_FLUSH: usize = 5_000;
    let mut errors = ErrorBackoff::new();
    let mut events = Vec::new();
    let mut attempts = Vec::new();
    while let Some((e, a)) = rx.recv().await {
        events.clear();
        attempts.clear();
        events.push(e);
        attempts.push(a);
        while events.len() < MAX_FLUSH {
            match rx.try_recv() {
                Ok((e, a)) => {
                    events.push(e);
                    attempts.push(a);
                }
                Err(_) => break,
            }
        }
        loop {
            let started = std::time::Instant::now();
            let result = ack_tasks(&shared.pool, shared.consumer_id, &events, &attempts).await;
            match result {
                Ok(done) => {
                    tracing::trace!(acked = done.len(), ms = started.elapsed().as_secs_f64() * 1e3, "flushed acks");
                    errors.reset();
                    if done.len() < events.len() {
                        warn!(
                            lost = events.len() - done.len(),
                            "some acks came after their leases were lost; those tasks run again"
                        );
                    }
                    break;
                }
                Err(e) => {
                    let wait = errors.next();
                    warn!(error = %e, pending = events.len(), retry_in = ?wait, "ack flush failed");
                    sleep(wait).await;
                }
            }
        }
        let mut held = shared.in_flight.lock().expect("in-flight map poisoned");
        for e in &events {
            held.remove(e);
        }
    }
}

/// Extends the leases of held tasks and beats the worker's heart.
async fn keeper(shared: Arc<Shared>, heartbeat: Duration, stop: CancellationToken) {
    let every = heartbeat.min(Duration::from_millis((shared.lease_ms / 3).max(100) as u64));
    let mut errors = ErrorBackoff::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep(every) => {}
        }
        let (events, attempts): (Vec<i64>, Vec<i32>) =
            shared.in_flight.lock().expect("in-flight map poisoned").iter().map(|(e, a)| (*e, *a)).unzip();
        let status = if shared.stopping.load(Ordering::Relaxed) {
            "stopping"
        } else if events.is_empty() {
            "idle"
        } else {
            "active"
        };
        let result: Result<(i64, i64), sqlx::Error> = sqlx::query_as(sql::KEEPALIVE)
            // Planned for each call's own arrays, as the ack is (see ack_tasks).
            .persistent(false)
            .bind(shared.consumer_id)
            .bind(&events)
            .bind(&attempts)
            .bind(shared.worker_id)
            .bind(shared.lease_ms)
            .bind(status)
            .fetch_one(&shared.pool)
            .await;
        match result {
            Ok((extended, registered)) => {
                errors.reset();
                if (extended as usize) < events.len() {
                    debug!(lost = events.len() - extended as usize, "some held tasks were settled or lost meanwhile");
                }
                if registered == 0 {
                    // Another subscriber took us for dead; come back.
                    warn!("worker row missing (heartbeat was late); registering again");
                    if let Err(e) = register_worker(&shared.pool, shared.worker_id, shared.consumer_id).await {
                        warn!(error = %e, "could not register the worker again");
                    }
                }
            }
            Err(e) => {
                let wait = errors.next();
                warn!(error = %e, "lease extension failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = sleep(wait) => {}
                }
            }
        }
    }
}

/// LISTENs on the stream's channel and wakes the driver on every notification
/// (a `Notify` folds a burst into one wake-up). Reconnects with backoff.
async fn listener(shared: Arc<Shared>, wake: Arc<Notify>, stop: CancellationToken) {
    let channel = format!("sluice.{}", shared.stream_id);
    let mut errors = ErrorBackoff::new();
    loop {
        let connected = async {
            let mut l = PgListener::connect_with(&shared.pool).await?;
            l.listen(&channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            l = connected => match l {
                Ok(l) => l,
                Err(e) => {
                    let wait = errors.next();
                    warn!(error = %e, retry_in = ?wait, "LISTEN connection failed; polling meanwhile");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = sleep(wait) => continue,
                    }
                }
            }
        };
        errors.reset();
        // Anything may have happened while we were not listening.
        wake.notify_one();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                n = listener.try_recv() => match n {
                    Ok(Some(_)) => wake.notify_one(),
                    Ok(None) => {
                        // The connection dropped; the next call reconnects.
                        warn!("LISTEN connection lost; reconnecting");
                        wake.notify_one();
                    }
                    Err(e) => {
                        let wait = errors.next();
                        warn!(error = %e, retry_in = ?wait, "LISTEN failed; reconnecting");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = sleep(wait) => break,
                        }
                    }
                }
            }
        }
    }
}
