//! What a handler receives, and how it settles the task explicitly.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::admin::duration_ms;
use crate::error::{InvalidInput, TaskError};
use crate::ids::{EventId, Priority, TaskState, WorkerId};
use crate::metrics::{Metrics, Requeue, Settled};
use crate::pooler::{on_db, Db};
use crate::publish::check_time;
use crate::sql;
use crate::subject::check_text;
use crate::subscriber::Shared;

/// How a handler settled its task, if it did so itself.
pub(crate) const UNSETTLED: u8 = 0;
/// Acked, nacked or deferred on the subscriber's pool: done.
pub(crate) const ACKED: u8 = 1;
/// Settled inside the caller's transaction: done only if it commits.
pub(crate) const SETTLED_IN_TX: u8 = 2;
/// Left to its lease: the handler's `Ok` does not ack it (an error still
/// fails the attempt). Set by [`Message::leave_to_lease`], and by a nack,
/// defer or release that failed: the handler meant the task not to
/// complete, so a failure to say so must not turn into an ack.
pub(crate) const LEFT: u8 = 3;

/// One task handed to a handler: the event (typed payload) and the task's
/// attempt and priority.
///
/// Returning `Ok` from the handler acks the task; returning an error
/// schedules a retry. A handler may instead settle it explicitly, on the
/// subscriber's pool ([`Message::ack`], [`Message::nack`], [`Message::defer`])
/// or inside its own transaction ([`Message::ack_tx`], [`Message::nack_tx`],
/// [`Message::defer_tx`]); then its return value no longer acks. After a
/// nack, defer or release that failed (or [`Message::leave_to_lease`]),
/// `Ok` does not ack either: the task stays with this attempt until its
/// lease ends, then comes back.
pub struct Message<T> {
    pub(crate) task: TaskRef,
    pub(crate) subject: String,
    pub(crate) payload: T,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) key: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) priority: Priority,
    pub(crate) shared: Arc<Shared>,
    pub(crate) settled: Arc<AtomicU8>,
    /// The subscriber's completer, for [`Message::ack_batched`].
    pub(crate) acks: crate::subscriber::Acks,
}

impl<T: fmt::Debug> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("stream", &self.task.stream)
            .field("consumer", &self.task.consumer)
            .field("id", &self.task.event_id)
            .field("subject", &self.subject)
            .field("attempt", &self.task.attempt)
            .field("priority", &self.priority)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl<T> Message<T> {
    /// The event's id.
    pub fn id(&self) -> EventId {
        self.task.event_id
    }

    /// The stream the event was published to.
    pub fn stream(&self) -> &str {
        &self.task.stream
    }

    /// The consumer this task belongs to.
    pub fn consumer(&self) -> &str {
        &self.task.consumer
    }

    /// The event's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The event's payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The event's metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The event's ordering key, if it has one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// When the event was published.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// This attempt's number: 1 on first delivery. Deferrals and requeues
    /// count too, so a growing delay can be built on it.
    pub fn attempt(&self) -> i32 {
        self.task.attempt
    }

    /// The task's priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The task's state while a handler holds it: always [`TaskState::Running`].
    pub fn state(&self) -> TaskState {
        TaskState::Running
    }

    /// This attempt's hold on the task, to settle it from elsewhere (another
    /// task, or a later callback) with [`TaskRef::ack`] and friends.
    pub fn task(&self) -> &TaskRef {
        &self.task
    }

    /// Acks the task now, on the subscriber's pool. Fails with
    /// [`TaskError::LeaseLost`] when this attempt no longer holds the task.
    #[tracing::instrument(name = "sluice.ack", skip_all, fields(consumer = %self.task.consumer, event_id = self.task.event_id.0, attempt = self.task.attempt))]
    pub async fn ack(&self) -> Result<(), TaskError> {
        self.check_unsettled()?;
        self.task.ack_counted(&self.shared.pool, Some(&self.shared.metrics)).await?;
        self.settled.store(ACKED, Ordering::Release);
        self.shared.acked();
        Ok(())
    }

    /// Acks the task with the subscriber's implicit acks, many per
    /// statement, and returns once it is written. Where handlers ack
    /// explicitly at a high rate (the gateway acks for its clients), this
    /// costs a share of one round trip instead of one each. Fails with
    /// [`TaskError::LeaseLost`] when this attempt no longer holds the task,
    /// or when the write was given up after its retries (the task then
    /// comes back, as an implicit ack's would).
    #[tracing::instrument(name = "sluice.ack", skip_all, fields(consumer = %self.task.consumer, event_id = self.task.event_id.0, attempt = self.task.attempt, batched = true))]
    pub async fn ack_batched(&self) -> Result<(), TaskError> {
        self.check_unsettled()?;
        let key = (self.task.event_id.0, self.task.lease_token);
        match self.acks.send_and_wait(key).await {
            Some(true) => {
                self.settled.store(ACKED, Ordering::Release);
                Ok(())
            }
            Some(false) => {
                // The caller is told the ack did not happen: returning `Ok`
                // must not ack it after all.
                self.leave_to_lease();
                Err(self.task.lost())
            }
            // The completer stopped (the subscriber is shutting down): ack directly.
            None => self.ack().await,
        }
    }

    /// Acks the task inside the caller's transaction: the task completes only
    /// if that transaction commits, together with the caller's own writes.
    /// Fails with [`TaskError::LeaseLost`] when this attempt no longer holds
    /// the task; the caller should then roll back.
    ///
    /// ```no_run
    /// # async fn handle(pool: sqlx::PgPool, msg: sluice::Message<serde_json::Value>) -> Result<(), sluice::HandlerError> {
    /// let mut tx = pool.begin().await?;
    /// sqlx::query("INSERT INTO invoices (event_id) VALUES ($1)").bind(msg.id().0).execute(&mut *tx).await?;
    /// msg.ack_tx(&mut *tx).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    #[tracing::instrument(name = "sluice.ack_tx", skip_all, fields(consumer = %self.task.consumer, event_id = self.task.event_id.0, attempt = self.task.attempt))]
    pub async fn ack_tx<'c>(&self, tx: impl Into<Db<'c>>) -> Result<(), TaskError> {
        self.check_unsettled()?;
        self.task.ack_counted(tx, Some(&self.shared.metrics)).await?;
        self.settled.store(SETTLED_IN_TX, Ordering::Release);
        Ok(())
    }

    /// Nacks the task now: discard it, or requeue it at the start or the end
    /// of the queue (a requeue counts as an attempt).
    #[tracing::instrument(name = "sluice.nack", skip_all, fields(consumer = %self.task.consumer, event_id = self.task.event_id.0, attempt = self.task.attempt, requeue = nack.action.requeue().as_str()))]
    pub async fn nack(&self, nack: Nack) -> Result<TaskState, TaskError> {
        self.check_unsettled()?;
        let state = self.task.nack_counted(&self.shared.pool, nack, Some(&self.shared.metrics)).await;
        let state = self.left_on_error(state)?;
        self.settled.store(ACKED, Ordering::Release);
        Ok(state)
    }

    /// [`Message::nack`] inside the caller's transaction.
    #[tracing::instrument(name = "sluice.nack_tx", skip_all, fields(consumer = %self.task.consumer, event_id = self.task.event_id.0, attempt = self.task.attempt, requeue = nack.action.requeue().as_str()))]
    pub async fn nack_tx<'c>(&self, tx: impl Into<Db<'c>>, nack: Nack) -> Result<TaskState, TaskError> {
        self.check_unsettled()?;
        let state = self.task.nack_counted(tx, nack, Some(&self.shared.metrics)).await;
        let state = self.left_on_error(state)?;
        self.settled.store(SETTLED_IN_TX, Ordering::Release);
        Ok(state)
    }

    /// Defers the task: it waits in `scheduled` and comes back when due, with
    /// the priority given (default: its own). Returns the time it is due.
    ///
    /// A deferral is not a failure: it never discards the task. Its next
    /// delivery is a new attempt all the same (so a growing delay can be built
    /// on [`Message::attempt`]), and a later failure is judged against
    /// `max_attempts` with those attempts counted.
    #[tracing::instrument(name = "sluice.defer", skip_all, fields(consumer = %self.task.consumer, event_id = self.task.event_id.0, attempt = self.task.attempt))]
    pub async fn defer(&self, defer: Defer) -> Result<DateTime<Utc>, TaskError> {
        self.check_unsettled()?;
        let deferred = self.task.defer_at(&self.shared.pool, defer, Some(&self.shared.metrics)).await;
        let (due, wait_ms) = self.left_on_error(deferred)?;
        self.shared.scheduled_in(wait_ms);
        self.settled.store(ACKED, Ordering::Release);
        Ok(due)
    }

    /// Hands the task back to the queue now, as a shutdown does: available
    /// again at once rather than after a lease, this attempt counted but not
    /// as a failure (no backoff, no error recorded), logged as `released`
    /// with `reason`. On the consumer's last attempt the task is discarded
    /// instead (a dead letter), as when a lease is lost: a task whose
    /// handler keeps taking its process down must not come back forever.
    /// For a handler that can neither finish its task nor fail it: the
    /// gateway releases the tasks of a client that went away. Fails with
    /// [`TaskError::LeaseLost`] when this attempt no longer holds it.
    ///
    /// When it fails, whatever the error, the task is left to its lease
    /// ([`Message::leave_to_lease`]): returning `Ok` afterwards does not ack
    /// it. Try again, or let the task come back when its lease ends.
    #[tracing::instrument(name = "sluice.release", skip_all, fields(consumer = %self.task.consumer, event_id = self.task.event_id.0, attempt = self.task.attempt))]
    pub async fn release(&self, reason: &str) -> Result<(), TaskError> {
        self.check_unsettled()?;
        let released = self.release_once(reason).await;
        self.left_on_error(released)
    }

    async fn release_once(&self, reason: &str) -> Result<(), TaskError> {
        check_text("reason", reason)?;
        let task = &self.task;
        let query = sqlx::query_as::<_, (i64, i64, i64)>(sql::RELEASE)
            .persistent(false)
            .bind(task.consumer_id)
            .bind(vec![task.event_id.0])
            .bind(vec![task.lease_token])
            .bind(task.worker_id.0)
            .bind(vec![true])
            .bind(reason);
        let (released, discarded, _) = on_db!(Db::from(&self.shared.pool), query, fetch_one).await?;
        if released == 0 {
            return Err(task.lost());
        }
        self.shared.metrics.dead_lettered.increment(discarded as u64);
        self.settled.store(ACKED, Ordering::Release);
        Ok(())
    }

    /// Ends this attempt's say over the task without settling it: returning
    /// `Ok` from the handler no longer acks it (an error still fails the
    /// attempt, as always). The task stays `running` under this attempt's
    /// lease; once the handler has returned and the lease has ended, the
    /// worker's heartbeat hands it back (or the rescuer, when the worker is
    /// gone): available again, this attempt counted. For a handler that must neither complete its task nor fail
    /// it and could not hand it back: the gateway leaves a gone client's task
    /// so when its release cannot be written. A later ack, nack or defer of
    /// this message still settles the task.
    pub fn leave_to_lease(&self) {
        let _ = self.settled.compare_exchange(UNSETTLED, LEFT, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A nack, defer or release that failed leaves the task to its lease.
    fn left_on_error<R>(&self, result: Result<R, TaskError>) -> Result<R, TaskError> {
        if result.is_err() {
            self.leave_to_lease();
        }
        result
    }

    /// [`Message::defer`] inside the caller's transaction.
    #[tracing::instrument(name = "sluice.defer_tx", skip_all, fields(consumer = %self.task.consumer, event_id = self.task.event_id.0, attempt = self.task.attempt))]
    pub async fn defer_tx<'c>(&self, tx: impl Into<Db<'c>>, defer: Defer) -> Result<DateTime<Utc>, TaskError> {
        self.check_unsettled()?;
        let deferred = self.task.defer_at(tx, defer, Some(&self.shared.metrics)).await;
        let (due, wait_ms) = self.left_on_error(deferred)?;
        self.shared.scheduled_in(wait_ms);
        self.settled.store(SETTLED_IN_TX, Ordering::Release);
        Ok(due)
    }

    fn check_unsettled(&self) -> Result<(), TaskError> {
        if self.settled.load(Ordering::Acquire) == ACKED {
            return Err(TaskError::AlreadySettled {
                consumer: self.task.consumer.clone(),
                event_id: self.task.event_id,
            });
        }
        Ok(())
    }
}

/// One attempt's hold on one task: what ack, nack and defer are fenced by.
/// Its lease token is new at every claim and never reused, not even after a
/// retry by hand. Settling with a token that no longer holds the task (its
/// lease ended and the task was handed out again, or it was settled already)
/// changes nothing and fails with [`TaskError::LeaseLost`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskRef {
    /// The consumer's stream.
    pub stream: String,
    /// The consumer's name.
    pub consumer: String,
    /// The consumer's internal id.
    pub consumer_id: i32,
    /// The task's event.
    pub event_id: EventId,
    /// The attempt holding the task (a count, for messages and backoff).
    pub attempt: i32,
    /// The lease token of this attempt: what settling is fenced by.
    pub lease_token: i64,
    /// The worker holding the task.
    pub worker_id: WorkerId,
}

impl TaskRef {
    fn lost(&self) -> TaskError {
        TaskError::LeaseLost { consumer: self.consumer.clone(), event_id: self.event_id, attempt: self.attempt }
    }

    /// Counts a settlement: on the subscriber's handles, or on handles of
    /// its own when the task is settled from elsewhere.
    fn count(&self, metrics: Option<&Metrics>, settled: Settled) {
        match metrics {
            Some(metrics) => metrics.settled(settled),
            None => crate::metrics::settled_outside(&self.stream, &self.consumer, settled),
        }
    }

    /// Completes the task (deleted, or kept as completed per the consumer's retention).
    #[tracing::instrument(name = "sluice.ack", skip_all, fields(consumer = %self.consumer, event_id = self.event_id.0, attempt = self.attempt))]
    pub async fn ack<'c>(&self, db: impl Into<Db<'c>>) -> Result<(), TaskError> {
        self.ack_counted(db, None).await
    }

    pub(crate) async fn ack_counted<'c>(
        &self,
        db: impl Into<Db<'c>>,
        metrics: Option<&Metrics>,
    ) -> Result<(), TaskError> {
        let done = ack_tasks(db, self.consumer_id, &[self.event_id.0], &[self.lease_token]).await?;
        if done.is_empty() {
            self.count(metrics, Settled::AckRefused);
            return Err(self.lost());
        }
        self.count(metrics, Settled::Acked);
        Ok(())
    }

    /// Discards or requeues the task; returns its new state (a requeue on the
    /// last attempt discards).
    #[tracing::instrument(name = "sluice.nack", skip_all, fields(consumer = %self.consumer, event_id = self.event_id.0, attempt = self.attempt, requeue = nack.action.requeue().as_str()))]
    pub async fn nack<'c>(&self, db: impl Into<Db<'c>>, nack: Nack) -> Result<TaskState, TaskError> {
        self.nack_counted(db, nack, None).await
    }

    pub(crate) async fn nack_counted<'c>(
        &self,
        db: impl Into<Db<'c>>,
        nack: Nack,
        metrics: Option<&Metrics>,
    ) -> Result<TaskState, TaskError> {
        if let Some(reason) = &nack.reason {
            check_text("reason", reason)?;
        }
        let requeue = nack.action.requeue();
        let query = sqlx::query_scalar(sql::NACK)
            .bind(self.consumer_id)
            .bind(self.event_id.0)
            .bind(self.lease_token)
            .bind(self.worker_id.0)
            .bind(nack.action.as_str())
            .bind(nack.reason);
        let state: Option<String> = on_db!(db.into(), query, fetch_optional).await?;
        let state = TaskState::from_db(&state.ok_or_else(|| self.lost())?);
        self.count(metrics, Settled::Nacked { requeue, discarded: state == TaskState::Discarded });
        Ok(state)
    }

    /// Defers the task; returns the time it is due.
    #[tracing::instrument(name = "sluice.defer", skip_all, fields(consumer = %self.consumer, event_id = self.event_id.0, attempt = self.attempt))]
    pub async fn defer<'c>(&self, db: impl Into<Db<'c>>, defer: Defer) -> Result<DateTime<Utc>, TaskError> {
        Ok(self.defer_at(db, defer, None).await?.0)
    }

    /// Defers the task; returns the time it is due and the wait until then
    /// in ms, by the database's clock.
    pub(crate) async fn defer_at<'c>(
        &self,
        db: impl Into<Db<'c>>,
        defer: Defer,
        metrics: Option<&Metrics>,
    ) -> Result<(DateTime<Utc>, i64), TaskError> {
        if let Some(reason) = &defer.reason {
            check_text("reason", reason)?;
        }
        let (until, delay_ms) = match defer.when {
            When::Until(t) => {
                check_time("defer", t)?;
                if t < Utc::now() {
                    return Err(InvalidInput::Setting {
                        setting: "defer",
                        reason: format!("{t} is in the past: a deferral cannot have a negative delay"),
                    }
                    .into());
                }
                (Some(t), 0)
            }
            When::By(d) => (None, duration_ms("defer", d)?),
        };
        let query = sqlx::query_as(sql::DEFER)
            .bind(self.consumer_id)
            .bind(self.event_id.0)
            .bind(self.lease_token)
            .bind(self.worker_id.0)
            .bind(until)
            .bind(delay_ms)
            .bind(defer.priority.map(|p| i16::from(p.get())))
            .bind(defer.reason);
        let due: Option<(DateTime<Utc>, i64)> = on_db!(db.into(), query, fetch_optional).await?;
        let due = due.ok_or_else(|| self.lost())?;
        self.count(metrics, Settled::Deferred);
        Ok(due)
    }
}

/// Completes the tasks `(event_ids[i], lease_tokens[i])` of a consumer still
/// held under those tokens, in one statement; returns the event ids
/// completed. A missing one lost its lease. Serves explicit acks and the
/// subscriber's batched flush: one round trip either way (`sluice.ack_v1`
/// plans its statement for each call's arrays, with JIT off).
pub(crate) async fn ack_tasks<'c>(
    db: impl Into<Db<'c>>,
    consumer_id: i32,
    event_ids: &[i64],
    lease_tokens: &[i64],
) -> Result<Vec<i64>, sqlx::Error> {
    let ack = sqlx::query_scalar(sql::ACK).bind(consumer_id).bind(event_ids).bind(lease_tokens);
    on_db!(db.into(), ack, fetch_all).await
}

/// How to nack a task, with an optional reason kept in its errors and the log.
///
/// ```
/// use sluice::Nack;
/// let nack = Nack::requeue_end().reason("rate limited");
/// let dead = Nack::discard("malformed order");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    action: NackAction,
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NackAction {
    Discard,
    RequeueStart,
    RequeueEnd,
}

impl NackAction {
    fn as_str(self) -> &'static str {
        match self {
            NackAction::Discard => "discard",
            NackAction::RequeueStart => "start",
            NackAction::RequeueEnd => "end",
        }
    }

    fn requeue(self) -> Requeue {
        match self {
            NackAction::Discard => Requeue::None,
            NackAction::RequeueStart => Requeue::Start,
            NackAction::RequeueEnd => Requeue::End,
        }
    }
}

impl Nack {
    /// Discard the task: the dead-letter state, kept for inspection.
    pub fn discard(reason: impl Into<String>) -> Self {
        Nack { action: NackAction::Discard, reason: Some(reason.into()) }
    }

    /// Requeue the task at the start: it is the next claimed (among its priority).
    pub fn requeue_start() -> Self {
        Nack { action: NackAction::RequeueStart, reason: None }
    }

    /// Requeue the task at the end: after everything queued now.
    pub fn requeue_end() -> Self {
        Nack { action: NackAction::RequeueEnd, reason: None }
    }

    /// Why, for the task's errors and the audit log.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// When and how to defer a task.
///
/// ```
/// use std::time::Duration;
/// use sluice::{Defer, Priority};
/// let defer = Defer::by(Duration::from_secs(30)).priority(Priority::HIGHEST).reason("downstream unavailable");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defer {
    when: When,
    priority: Option<Priority>,
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    By(Duration),
    Until(DateTime<Utc>),
}

impl Defer {
    /// Due after this delay (measured by the database's clock).
    pub fn by(delay: Duration) -> Self {
        Defer { when: When::By(delay), priority: None, reason: None }
    }

    /// Due at this time; a time in the past is refused.
    pub fn until(at: DateTime<Utc>) -> Self {
        Defer { when: When::Until(at), priority: None, reason: None }
    }

    /// The priority it comes back with (default: the task's own).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Why, for the audit log.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// The error a handler returns: the attempt failed. By default the task is
/// retried after a backoff; [`HandlerError::discard`] dead-letters it at once.
///
/// Any `std::error::Error` converts into it, so `?` works in handlers.
pub struct HandlerError {
    message: String,
    retry: bool,
}

impl HandlerError {
    /// A failure that should be retried.
    pub fn new(message: impl fmt::Display) -> Self {
        HandlerError { message: message.to_string(), retry: true }
    }

    /// A failure that no retry can fix: the task is discarded (dead-lettered) now.
    pub fn discard(message: impl fmt::Display) -> Self {
        HandlerError { message: message.to_string(), retry: false }
    }

    /// Whether the task will be retried.
    pub fn is_retryable(&self) -> bool {
        self.retry
    }

    /// The error's message, as recorded with the task.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        HandlerError::new(message)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError").field("message", &self.message).field("retry", &self.retry).finish()
    }
}
