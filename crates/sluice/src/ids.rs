//! Typed identifiers and values.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// The id of an event: unique across all streams, growing with each insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct EventId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id of a running subscriber, as stored in `sluice.workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct WorkerId(pub uuid::Uuid);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A task priority, 1 (lowest, the default) to 5 (highest). Higher
/// priorities are claimed first.
///
/// ```
/// use sluice::Priority;
/// assert_eq!(Priority::new(5).unwrap(), Priority::HIGHEST);
/// assert!(Priority::new(6).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    /// Priority 1, the default.
    pub const LOWEST: Priority = Priority(1);
    /// Priority 5.
    pub const HIGHEST: Priority = Priority(5);

    /// A priority from 1 to 5; anything else is [`InvalidInput::Priority`].
    pub fn new(value: i64) -> Result<Self, InvalidInput> {
        if (1..=5).contains(&value) {
            Ok(Priority(value as u8))
        } else {
            Err(InvalidInput::Priority(value))
        }
    }

    /// The priority as a number from 1 to 5.
    pub fn get(self) -> u8 {
        self.0
    }

    pub(crate) fn from_db(value: i16) -> Self {
        Priority(value.clamp(1, 5) as u8)
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::LOWEST
    }
}

impl TryFrom<u8> for Priority {
    type Error = InvalidInput;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Priority::new(value.into())
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The state of a task, as stored in `sluice.tasks.state`.
///
/// Queries read it as text (`state::text`): a connection caches enum type ids,
/// and those change when the migrations are reverted and applied again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for its time (`deliver_at`, a deferral or a retry backoff).
    Scheduled,
    /// Of a consumer ordered by key: waiting for the earlier tasks of its
    /// key to finish ([`ConsumerOptions::ordered_by_key`](crate::ConsumerOptions::ordered_by_key)).
    Waiting,
    /// Ready to be claimed.
    Available,
    /// Claimed by a worker, under a lease.
    Running,
    /// Acked (kept only when the consumer retains completed tasks).
    Completed,
    /// Dead-lettered: discarded by a nack, by a handler error that must not
    /// be retried, or after its last attempt.
    Discarded,
    /// Cancelled before it ran.
    Cancelled,
}

impl TaskState {
    /// The state's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Waiting => "waiting",
            TaskState::Available => "available",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Discarded => "discarded",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TaskState {
    /// The state as read from `sluice.tasks.state`. The column's enum holds
    /// only the seven states; anything else reads as discarded, the state that
    /// keeps a task out of the queue and up for inspection.
    pub(crate) fn from_db(state: &str) -> TaskState {
        state.parse().unwrap_or(TaskState::Discarded)
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "scheduled" => TaskState::Scheduled,
            "waiting" => TaskState::Waiting,
            "available" => TaskState::Available,
            "running" => TaskState::Running,
            "completed" => TaskState::Completed,
            "discarded" => TaskState::Discarded,
            "cancelled" => TaskState::Cancelled,
            other => return Err(format!("unknown task state {other:?}")),
        })
    }
}
