//! What a handler receives, and how it settles the task explicitly.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::error::TaskError;
use crate::ids::{EventId, Priority, TaskState};
use crate::sql;
use crate::subscriber::Shared;

/// How a handler settled its task, if it did so itself.
pub(crate) const UNSETTLED: u8 = 0;
/// Acked on the subscriber's pool: done.
pub(crate) const ACKED: u8 = 1;
/// Acked inside the caller's transaction: done only if it commits.
pub(crate) const ACKED_IN_TX: u8 = 2;

/// One task handed to a handler: the event (typed payload) and the task's
/// attempt and priority.
///
/// Returning `Ok` from the handler acks the task; returning an error
/// schedules a retry. A handler may instead ack explicitly, on the
/// subscriber's pool ([`Message::ack`]) or inside its own transaction
/// ([`Message::ack_tx`]).
pub struct Message<T> {
    pub(crate) id: EventId,
    pub(crate) subject: String,
    pub(crate) payload: T,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) key: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) attempt: i32,
    pub(crate) priority: Priority,
    pub(crate) shared: Arc<Shared>,
    pub(crate) settled: Arc<AtomicU8>,
}

impl<T: fmt::Debug> fmt::Debug for Message<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("stream", &self.shared.stream)
            .field("consumer", &self.shared.consumer)
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("attempt", &self.attempt)
            .field("priority", &self.priority)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl<T> Message<T> {
    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The stream the event was published to.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// The consumer this task belongs to.
    pub fn consumer(&self) -> &str {
        &self.shared.consumer
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

    /// This attempt's number: 1 on first delivery.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }

    /// The task's priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The task's state while a handler holds it: always [`TaskState::Running`].
    pub fn state(&self) -> TaskState {
        TaskState::Running
    }

    /// Acks the task now, on the subscriber's pool. Fails with
    /// [`TaskError::LeaseLost`] when this attempt no longer holds the task.
    pub async fn ack(&self) -> Result<(), TaskError> {
        self.ack_on(&self.shared.pool, ACKED).await
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
    pub async fn ack_tx<'e>(&self, tx: impl PgExecutor<'e>) -> Result<(), TaskError> {
        self.ack_on(tx, ACKED_IN_TX).await
    }

    async fn ack_on<'e>(&self, db: impl PgExecutor<'e>, how: u8) -> Result<(), TaskError> {
        if self.settled.load(Ordering::Acquire) == ACKED {
            return Err(TaskError::AlreadySettled { consumer: self.shared.consumer.clone(), event_id: self.id });
        }
        let done: Vec<i64> = sqlx::query_scalar(sql::ACK)
            .bind(self.shared.consumer_id)
            .bind(vec![self.id.0])
            .bind(vec![self.attempt])
            .fetch_all(db)
            .await?;
        if done.is_empty() {
            return Err(TaskError::LeaseLost {
                consumer: self.shared.consumer.clone(),
                event_id: self.id,
                attempt: self.attempt,
            });
        }
        self.settled.store(how, Ordering::Release);
        Ok(())
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
