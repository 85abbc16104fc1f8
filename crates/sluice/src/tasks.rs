//! Inspecting and steering tasks: get one, list and count them by filter,
//! read a task's log, and cancel, discard or retry by hand one task, a list
//! of them, or every task a filter selects.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use crate::error::{Error, InvalidInput};
use crate::ids::{EventId, Priority, TaskState, WorkerId};
use crate::pooler::on_pool;
use crate::sql;
use crate::subject::{check_name, check_pattern, check_text};

/// A task as stored: one event's work for one consumer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
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

/// An event as published, seen through one consumer's task of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Event {
    /// The event's id.
    pub id: EventId,
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// Its metadata (string values).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Its key, if it has one.
    pub key: Option<String>,
    /// Its priority.
    pub priority: Priority,
    /// When it was to be delivered, if not at once.
    pub deliver_at: Option<DateTime<Utc>>,
    /// When it was published.
    pub created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct EventRow {
    id: i64,
    subject: String,
    payload: String,
    metadata: String,
    key: Option<String>,
    priority: i16,
    deliver_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// The event of consumer `consumer`'s task for `event_id`: what its handler
/// is given. [`Error::TaskNotFound`] when the consumer has no such task.
pub async fn task_event(pool: &PgPool, stream: &str, consumer: &str, event_id: EventId) -> Result<Event, Error> {
    check_name("stream", stream)?;
    check_name("consumer", consumer)?;
    let row: Option<EventRow> =
        on_pool!(pool, sqlx::query_as(sql::TASK_EVENT).bind(stream).bind(consumer).bind(event_id.0), fetch_optional)
            .await
            .map_err(Error::db)?;
    let Some(r) = row else {
        crate::admin::get_consumer(pool, stream, consumer).await?;
        return Err(not_found(stream, consumer, event_id));
    };
    Ok(Event {
        id: EventId(r.id),
        subject: r.subject,
        payload: serde_json::from_str(&r.payload).unwrap_or_default(),
        metadata: serde_json::from_str(&r.metadata).unwrap_or_default(),
        key: r.key,
        priority: Priority::from_db(r.priority),
        deliver_at: r.deliver_at,
        created_at: r.created_at,
    })
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

/// Which tasks of a consumer a list, a count or a bulk action takes. The
/// default takes every task; each setting narrows it.
///
/// ```
/// use std::time::Duration;
/// use sluice::{TaskFilter, TaskState};
/// // Dead letters of the EU orders, older than an hour.
/// let filter = TaskFilter::default()
///     .state(TaskState::Discarded)
///     .subject("orders.eu.>")
///     .older_than(Duration::from_secs(3600));
/// // The tasks of one customer's events from the EU shop.
/// let customer = TaskFilter::default()
///     .payload_contains(serde_json::json!({"customer": "c-42"}))
///     .metadata_contains(serde_json::json!({"shop": "eu"}));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    event_ids: Option<Vec<EventId>>,
    states: Vec<TaskState>,
    subject: Option<String>,
    older_than: Option<Duration>,
    payload: Option<serde_json::Value>,
    metadata: Option<serde_json::Value>,
}

impl TaskFilter {
    /// Only the tasks of these events.
    pub fn events<I: IntoIterator<Item = EventId>>(mut self, ids: I) -> Self {
        self.event_ids = Some(ids.into_iter().collect());
        self
    }

    /// Only tasks in this state; call again to add more states.
    pub fn state(mut self, state: TaskState) -> Self {
        if !self.states.contains(&state) {
            self.states.push(state);
        }
        self
    }

    /// Only tasks whose event's subject matches this pattern (`*` one
    /// token, a final `>` one or more).
    pub fn subject(mut self, pattern: impl Into<String>) -> Self {
        self.subject = Some(pattern.into());
        self
    }

    /// Only tasks made more than this long ago.
    pub fn older_than(mut self, age: Duration) -> Self {
        self.older_than = Some(age);
        self
    }

    /// Only tasks whose event's payload contains this JSON, as Postgres's
    /// `@>` defines it: an object matches when it has these keys with
    /// values that contain the given ones (`{"customer": "c-42"}`), an
    /// array when it holds these elements, a scalar when it is equal.
    /// No index serves it: it reads every candidate's payload, so narrow
    /// with a state or subject on a large backlog.
    pub fn payload_contains(mut self, json: serde_json::Value) -> Self {
        self.payload = Some(json);
        self
    }

    /// Only tasks whose event's metadata has these entries. Metadata is a
    /// map of strings, so `json` must be an object of strings
    /// (`{"tenant": "eu"}`); anything else is an
    /// [`InvalidInput::Setting`] error when the filter is used.
    pub fn metadata_contains(mut self, json: serde_json::Value) -> Self {
        self.metadata = Some(json);
        self
    }

    /// The states it takes (all when empty).
    pub fn states(&self) -> &[TaskState] {
        &self.states
    }

    /// Checks the filter as listing with it would: a bad subject pattern,
    /// an age too large, or metadata that is not an object of strings is
    /// an [`Error::InvalidInput`] naming the setting. For forms that show
    /// each field's error before anything runs.
    pub fn validate(&self) -> Result<(), Error> {
        self.check()
    }

    fn check(&self) -> Result<(), Error> {
        if let Some(pattern) = &self.subject {
            check_pattern(pattern)?;
        }
        if let Some(age) = self.older_than {
            crate::admin::duration_ms("older_than", age)?;
        }
        if let Some(metadata) = &self.metadata {
            let strings = metadata.as_object().is_some_and(|map| map.values().all(serde_json::Value::is_string));
            if !strings {
                return Err(InvalidInput::Setting {
                    setting: "metadata_contains",
                    reason: format!(
                        "{metadata} is not an object of strings: metadata maps names to strings, \
                         so match it with one like {{\"tenant\": \"eu\"}}"
                    ),
                }
                .into());
            }
        }
        Ok(())
    }
}

/// Binds a filter's `$2..$8` (task_filter.sql) after the consumer id `$1`.
macro_rules! bind_filter {
    ($query:expr, $consumer_id:expr, $filter:expr, $after:expr) => {
        $query
            .bind($consumer_id)
            .bind($filter.event_ids.as_ref().map(|ids| ids.iter().map(|id| id.0).collect::<Vec<i64>>()))
            .bind((!$filter.states.is_empty()).then(|| $filter.states.iter().map(|s| s.as_str()).collect::<Vec<_>>()))
            .bind($filter.subject.as_deref())
            .bind($filter.older_than.map(|d| d.as_millis() as i64))
            .bind($filter.payload.as_ref().map(sqlx::types::Json))
            .bind($filter.metadata.as_ref().map(sqlx::types::Json))
            .bind($after)
    };
}

/// One page of [`list_tasks`]: the tasks, and the cursor of the next page
/// when there may be more.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskPage {
    /// The tasks, by event id.
    pub tasks: Vec<Task>,
    /// Pass it as `after` for the next page; `None` on the last one.
    pub next: Option<String>,
}

/// The largest page [`list_tasks`] returns.
pub const MAX_PAGE: usize = 1000;

/// A page of the tasks of consumer `consumer` (of `stream`) that `filter`
/// selects, by event id: at most `limit` (1 to [`MAX_PAGE`]), after the
/// cursor `after` (a previous page's `next`), so paging is stable while tasks
/// come and go.
#[tracing::instrument(name = "sluice.list_tasks", level = "debug", skip_all, fields(stream = %stream, consumer = %consumer))]
pub async fn list_tasks(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    filter: &TaskFilter,
    limit: usize,
    after: Option<&str>,
) -> Result<TaskPage, Error> {
    filter.check()?;
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            InvalidInput::Setting { setting: "limit", reason: format!("{limit} is outside 1..={MAX_PAGE}") }.into()
        );
    }
    let after = match after {
        None => 0,
        Some(cursor) => parse_cursor(cursor)?,
    };
    let consumer_id = consumer_id(pool, stream, consumer).await?;
    let rows: Vec<TaskRow> = on_pool!(
        pool,
        bind_filter!(sqlx::query_as(sql::TASK_LIST), consumer_id, filter, after).bind(limit as i64),
        fetch_all
    )
    .await
    .map_err(Error::db)?;
    let next = (rows.len() == limit).then(|| rows.last().map(|r| r.event_id.to_string())).flatten();
    Ok(TaskPage { tasks: rows.into_iter().map(Into::into).collect(), next })
}

fn parse_cursor(cursor: &str) -> Result<i64, InvalidInput> {
    cursor.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| InvalidInput::Setting {
        setting: "cursor",
        reason: format!("{cursor:?} is not a cursor: pass the `next` value of the previous page"),
    })
}

/// How many tasks of the consumer `filter` selects, by state (states with
/// none are left out).
#[tracing::instrument(name = "sluice.count_tasks", level = "debug", skip_all, fields(stream = %stream, consumer = %consumer))]
pub async fn count_tasks(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    filter: &TaskFilter,
) -> Result<Vec<(TaskState, i64)>, Error> {
    filter.check()?;
    let consumer_id = consumer_id(pool, stream, consumer).await?;
    let rows: Vec<(String, i64)> =
        on_pool!(pool, bind_filter!(sqlx::query_as(sql::TASK_COUNT), consumer_id, filter, 0_i64), fetch_all)
            .await
            .map_err(Error::db)?;
    let mut counts: Vec<(TaskState, i64)> = rows.into_iter().map(|(s, n)| (TaskState::from_db(&s), n)).collect();
    counts.sort_by_key(|(s, _)| *s as u8);
    Ok(counts)
}

/// What a bulk action did to the tasks a filter selected.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Steered {
    /// The events whose tasks were changed, by id.
    pub changed: Vec<EventId>,
}

/// The three things an operator does to tasks by hand, for [`steer_task`]
/// and [`steer_tasks`] (the CLI and the dashboard take them by name).
///
/// ```
/// use sluice::{TaskAction, TaskState};
/// let retry: TaskAction = "retry".parse().unwrap();
/// assert_eq!(retry.past(), "retried");
/// assert_eq!(retry.applies_to(), [TaskState::Discarded, TaskState::Cancelled]);
/// assert_eq!(retry.applies_to_list(), "discarded or cancelled");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskAction {
    /// Dead letters and cancelled tasks become available again, attempts reset.
    Retry,
    /// Available, scheduled and waiting tasks are cancelled: they will not
    /// run. So are dead letters named by state or id: set aside for good
    /// (which lets the next task of their key go, where the consumer holds
    /// keys on dead letters).
    Cancel,
    /// Available, scheduled and waiting tasks become dead letters (retriable
    /// by hand).
    Discard,
}

impl TaskAction {
    /// Every action.
    pub const ALL: [TaskAction; 3] = [TaskAction::Retry, TaskAction::Cancel, TaskAction::Discard];

    /// Its name: `retry`, `cancel`, `discard`.
    pub fn name(self) -> &'static str {
        match self {
            TaskAction::Retry => "retry",
            TaskAction::Cancel => "cancel",
            TaskAction::Discard => "discard",
        }
    }

    /// What it did: `retried`, `cancelled`, `discarded`.
    pub fn past(self) -> &'static str {
        match self {
            TaskAction::Retry => "retried",
            TaskAction::Cancel => "cancelled",
            TaskAction::Discard => "discarded",
        }
    }

    /// The states a task must be in for the action; tasks in others are left alone.
    pub fn applies_to(self) -> &'static [TaskState] {
        match self {
            TaskAction::Retry => &[TaskState::Discarded, TaskState::Cancelled],
            TaskAction::Cancel => {
                &[TaskState::Available, TaskState::Scheduled, TaskState::Waiting, TaskState::Discarded]
            }
            TaskAction::Discard => &[TaskState::Available, TaskState::Scheduled, TaskState::Waiting],
        }
    }

    /// Its statement, and the state it moves tasks to (`$11`).
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            TaskAction::Retry => (sql::TASK_RETRY, "available"),
            TaskAction::Cancel => (sql::TASK_SET_ASIDE, "cancelled"),
            TaskAction::Discard => (sql::TASK_SET_ASIDE, "discarded"),
        }
    }

    /// The states of the tasks the action takes among those `filter`
    /// selects: [`TaskAction::applies_to`], but a cancel takes dead letters
    /// only when the filter names them (by state, or by event id), so that
    /// "cancel everything pending" leaves them alone.
    pub fn takes(self, filter: &TaskFilter) -> Vec<TaskState> {
        let named = filter.states.contains(&TaskState::Discarded) || filter.event_ids.is_some();
        self.applies_to()
            .iter()
            .copied()
            .filter(|s| !(self == TaskAction::Cancel && *s == TaskState::Discarded) || named)
            .collect()
    }

    /// [`TaskAction::applies_to`] as people read it: `a, b or c`.
    pub fn applies_to_list(self) -> String {
        let names: Vec<&str> = self.applies_to().iter().map(|s| s.as_str()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

impl std::str::FromStr for TaskAction {
    type Err = InvalidInput;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        TaskAction::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| InvalidInput::Setting {
            setting: "action",
            reason: format!("{name:?} is not an action: retry, cancel or discard"),
        })
    }
}

impl std::fmt::Display for TaskAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How many tasks one statement of a bulk action changes: a filter that
/// selects millions goes in short transactions, not one long one.
const BULK_BATCH: i64 = 1000;

/// Retries by hand the discarded and cancelled tasks `filter` selects:
/// available again at the end of the queue, attempts reset, their error
/// history kept. Tasks in other states are left alone. Returns what changed.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// use sluice::{TaskFilter, TaskState};
/// let dead = TaskFilter::default().state(TaskState::Discarded).subject("orders.eu.>");
/// let retried = sluice::retry_tasks(&pool, "orders", "billing", &dead, Some("fixed the tax table")).await?;
/// println!("{} tasks retried", retried.changed.len());
/// # Ok(()) }
/// ```
pub async fn retry_tasks(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    filter: &TaskFilter,
    reason: Option<&str>,
) -> Result<Steered, Error> {
    steer_tasks(pool, TaskAction::Retry, stream, consumer, filter, reason).await
}

/// Cancels the available and scheduled tasks `filter` selects: they will not
/// run. Tasks in other states (running ones too) are left alone.
pub async fn cancel_tasks(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    filter: &TaskFilter,
    reason: Option<&str>,
) -> Result<Steered, Error> {
    steer_tasks(pool, TaskAction::Cancel, stream, consumer, filter, reason).await
}

/// Dead-letters the available and scheduled tasks `filter` selects, as a
/// `nack` that discards would: kept for the consumer's dead retention and
/// retriable by hand. Tasks in other states are left alone.
pub async fn discard_tasks(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    filter: &TaskFilter,
    reason: Option<&str>,
) -> Result<Steered, Error> {
    steer_tasks(pool, TaskAction::Discard, stream, consumer, filter, reason).await
}

/// Applies `action` to every task of the consumer that `filter` selects
/// and whose state allows it (see [`TaskAction::applies_to`]); a state in
/// the filter that the action cannot take is refused before anything
/// changes. [`retry_tasks`], [`cancel_tasks`] and [`discard_tasks`] are
/// its three forms.
#[tracing::instrument(name = "sluice.steer_tasks", skip_all, fields(action = %action, stream = %stream, consumer = %consumer, filter = ?filter))]
pub async fn steer_tasks(
    pool: &PgPool,
    action: TaskAction,
    stream: &str,
    consumer: &str,
    filter: &TaskFilter,
    reason: Option<&str>,
) -> Result<Steered, Error> {
    filter.check()?;
    if let Some(reason) = reason {
        check_text("reason", reason)?;
    }
    if let Some(state) = filter.states.iter().find(|s| !action.applies_to().contains(s)) {
        return Err(InvalidInput::Setting {
            setting: "state",
            reason: format!(
                "cannot {} {} tasks: only {} tasks can be",
                action.name(),
                state.as_str(),
                action.applies_to_list()
            ),
        }
        .into());
    }
    let consumer_id = consumer_id(pool, stream, consumer).await?;
    let (statement, to_state) = action.sql();
    // The states taken, decided here once ($12 of both statements).
    let states: Vec<&str> = action.takes(filter).iter().map(|s| s.as_str()).collect();
    let mut steered = Steered::default();
    let mut after = 0_i64;
    loop {
        let ids: Vec<i64> = on_pool!(
            pool,
            bind_filter!(sqlx::query_scalar(statement), consumer_id, filter, after)
                .bind(BULK_BATCH)
                .bind(reason)
                .bind(to_state)
                .bind(&states),
            fetch_all
        )
        .await
        .map_err(Error::db)?;
        let Some(&last) = ids.last() else { break };
        steered.changed.extend(ids.iter().copied().map(EventId));
        if (ids.len() as i64) < BULK_BATCH && filter.event_ids.is_some() {
            break;
        }
        after = last;
    }
    tracing::info!(stream, consumer, action = action.name(), tasks = steered.changed.len(), "tasks steered by hand");
    Ok(steered)
}

/// Cancels an available, scheduled or waiting task (it will not run), or a
/// dead letter (set aside for good). Any other state is
/// [`Error::TaskState`] and nothing changes.
pub async fn cancel_task(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    event_id: EventId,
    reason: Option<&str>,
) -> Result<(), Error> {
    steer_task(pool, TaskAction::Cancel, stream, consumer, event_id, reason).await
}

/// Dead-letters an available, scheduled or waiting task by hand (see
/// [`discard_tasks`]). Any other state is [`Error::TaskState`] and nothing
/// changes.
pub async fn discard_task(
    pool: &PgPool,
    stream: &str,
    consumer: &str,
    event_id: EventId,
    reason: Option<&str>,
) -> Result<(), Error> {
    steer_task(pool, TaskAction::Discard, stream, consumer, event_id, reason).await
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
    steer_task(pool, TaskAction::Retry, stream, consumer, event_id, reason).await
}

/// Applies `action` to the task of one event; a task in a state the action
/// cannot take is [`Error::TaskState`] and nothing changes. [`retry_task`],
/// [`cancel_task`] and [`discard_task`] are its three forms.
#[tracing::instrument(name = "sluice.steer_task", skip_all, fields(action = %action, stream = %stream, consumer = %consumer, event_id = %event_id))]
pub async fn steer_task(
    pool: &PgPool,
    action: TaskAction,
    stream: &str,
    consumer: &str,
    event_id: EventId,
    reason: Option<&str>,
) -> Result<(), Error> {
    let filter = TaskFilter::default().events([event_id]);
    if !steer_tasks(pool, action, stream, consumer, &filter, reason).await?.changed.is_empty() {
        return Ok(());
    }
    // Nothing changed: say why, from the task as it is now.
    let task = get_task(pool, stream, consumer, event_id).await?;
    Err(Error::TaskState {
        stream: stream.to_string(),
        consumer: consumer.to_string(),
        event_id,
        state: task.state,
        action: action.name(),
        allowed: action.applies_to_list(),
    })
}

/// The id of consumer `name` of `stream`, or why there is none.
pub(crate) async fn consumer_id(pool: &PgPool, stream: &str, name: &str) -> Result<i32, Error> {
    check_name("stream", stream)?;
    check_name("consumer", name)?;
    let found: Option<(i32,)> =
        on_pool!(pool, sqlx::query_as(sql::CONSUMER_LOOKUP).bind(stream).bind(name), fetch_optional)
            .await
            .map_err(Error::db)?;
    match found {
        Some((id,)) => Ok(id),
        // As get_consumer: a missing stream is a missing consumer of it.
        None => Err(Error::ConsumerNotFound { stream: stream.to_string(), consumer: name.to_string() }),
    }
}
