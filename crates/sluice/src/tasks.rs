//! Inspecting and steering single tasks: get, cancel, retry by hand, log.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use crate::error::Error;
use crate::ids::{EventId, Priority, TaskState, WorkerId};
use crate::pooler::on_pool;
use crate::sql;
use crate::subject::{check_name, check_text};

/// A task as stored: one event's work for one consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The task's event.
    pub event_id: EventId,
    /// The event's subject.
    pub subject: String,
    /// Where the task is in its life.
    pub state: TaskState,
    /// Its priority.
    pub priority: Priority,
    /// Attempts started so far.
    pub attempt: i32,
    /// When a scheduled task is due.
    pub schedule_at: Option<DateTime<Utc>>,
    /// When a running task's lease ends.
    pub lease_until: Option<DateTime<Utc>>,
    /// The worker holding a running task.
    pub worker_id: Option<WorkerId>,
    /// One entry per failed attempt: `{attempt, at, error, worker}`.
    pub errors: Vec<serde_json::Value>,
    /// When the task was made.
    pub created_at: DateTime<Utc>,
    /// When it was completed, discarded or cancelled.
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct TaskRow {
    event_id: i64,
    state: String,
    priority: i16,
    attempt: i32,
    schedule_at: Option<DateTime<Utc>>,
    lease_until: Option<DateTime<Utc>>,
    worker_id: Option<uuid::Uuid>,
    errors: String,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    subject: String,
}

impl From<TaskRow> for Task {
    fn from(r: TaskRow) -> Self {
        Task {
            event_id: EventId(r.event_id),
            subject: r.subject,
            state: TaskState::from_db(&r.state),
            priority: Priority::from_db(r.priority),
            attempt: r.attempt,
            schedule_at: r.schedule_at,
            lease_until: r.lease_until,
            worker_id: r.worker_id.map(WorkerId),
            errors: serde_json::from_str(&r.errors).unwrap_or_default(),
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

/// One entry of a task's audit log.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct TaskLogEntry {
    /// The attempt it concerns.
    pub attempt: i32,
    /// What happened: `failed`, `discarded`, `requeued_start`, `requeued_end`,
    /// `deferred`, `cancelled`, `lease_expired`, `released` or `retried`.
    pub action: String,
    /// Why, when given.
    pub reason: Option<String>,
    /// The task's priority after it.
    pub priority: Option<i16>,
    /// When a deferred or retried task is due.
    pub schedule_at: Option<DateTime<Utc>>,
    /// The worker that did it, if one did.
    pub worker_id: Option<uuid::Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
}

fn not_found(stream: &str, consumer: &str, event_id: EventId) -> Error {
    Error::TaskNotFound { stream: stream.to_string(), consumer: consumer.to_string(), event_id }
}

/// The task of consumer `consumer` (of `stream`) for event `event_id`.
pub async fn get_task(pool: &PgPool, stream: &str, consumer: &str, event_id: EventId) -> Result<Task, Error> {
    check_name("stream", stream)?;
    check_name("consumer", consumer)?;
    let row: Option<TaskRow> =
        on_pool!(pool, sqlx::query_as(sql::TASK_GET).bind(stream).bind(consumer).bind(event_id.0), fetch_optional)
            .await
            .map_err(Error::db)?;
    match row {
        Some(row) => Ok(row.into()),
        None => {
            crate::admin::get_consumer(pool, stream, consumer).await?;
            Err(not_found(stream, consumer, event_id))
        }
    }
}

/// The audit log of one task, oldest first. The log outlives the task: a
/// completed task is usually deleted on ack.
pub async fn task_log(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    event_id: EventId,
) -> Result<Vec<TaskLogEntry>, Error> {
    crate::admin::get_consumer(pool, stream, consumer).await?;
    on_pool!(pool, sqlx::query_as(sql::TASK_LOG).bind(stream).bind(consumer).bind(event_id.0), fetch_all)
        .await
        .map_err(Error::db)
}

/// Cancels an available or scheduled task; it will not run. Any other state
/// is [`Error::TaskState`] and nothing changes.
pub async fn cancel_task(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    event_id: EventId,
    reason: Option<&str>,
) -> Result<(), Error> {
    steer(
        pool,
        sql::TASK_CANCEL,
        "cancel",
        &[TaskState::Available, TaskState::Scheduled],
        stream,
        consumer,
        event_id,
        reason,
    )
    .await
}

/// Retries a discarded or cancelled task by hand: available again at the end
/// of the queue, attempts reset, its error history kept. Any other state is
/// [`Error::TaskState`] and nothing changes.
pub async fn retry_task(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    event_id: EventId,
    reason: Option<&str>,
) -> Result<(), Error> {
    steer(
        pool,
        sql::TASK_RETRY,
        "retry",
        &[TaskState::Discarded, TaskState::Cancelled],
        stream,
        consumer,
        event_id,
        reason,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn steer(
    pool: &PgPool,
    query: &'static str,
    action: &'static str,
    allowed: &[TaskState],
    stream: &str,
    consumer: &str,
    event_id: EventId,
    reason: Option<&str>,
) -> Result<(), Error> {
    check_name("stream", stream)?;
    check_name("consumer", consumer)?;
    if let Some(reason) = reason {
        check_text("reason", reason)?;
    }
    // The state the task had; its first column in both queries.
    let state: Option<String> = on_pool!(
        pool,
        sqlx::query_scalar(query).bind(stream).bind(consumer).bind(event_id.0).bind(reason),
        fetch_optional
    )
    .await
    .map_err(Error::db)?;
    let Some(state) = state else {
        crate::admin::get_consumer(pool, stream, consumer).await?;
        return Err(not_found(stream, consumer, event_id));
    };
    let state = TaskState::from_db(&state);
    if allowed.contains(&state) {
        Ok(())
    } else {
        Err(Error::TaskState {
            stream: stream.to_string(),
            consumer: consumer.to_string(),
            event_id,
            state,
            action,
            allowed: allowed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or "),
        })
    }
}
