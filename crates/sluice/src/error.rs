//! Error types, one per concern.

use crate::ids::EventId;

/// Why a name, subject, pattern or setting was refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A stream or consumer name breaks the naming rules.
    #[error("invalid {kind} name {name:?}: {reason}")]
    Name {
        /// `"stream"` or `"consumer"`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An event subject breaks the subject rules.
    #[error("invalid subject {subject:?}: {reason}")]
    Subject {
        /// The subject as given.
        subject: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A subject pattern (consumer filter) breaks the pattern rules.
    #[error("invalid subject pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A priority outside 1..=5.
    #[error("invalid priority {0}: a priority is 1 (lowest) to 5 (highest)")]
    Priority(i64),
    /// Any other setting out of its range.
    #[error("invalid {setting}: {reason}")]
    Setting {
        /// The setting's name.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A payload that cannot be stored.
    #[error("invalid payload for subject {subject:?}: {reason}")]
    Payload {
        /// The subject of the event being published.
        subject: String,
        /// What is wrong with the payload.
        reason: String,
    },
}

/// Errors of the stream, consumer, publish and subscribe calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input refused before anything was stored.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The stream does not exist.
    #[error("stream {stream:?} does not exist")]
    StreamNotFound {
        /// The stream's name.
        stream: String,
    },
    /// The consumer does not exist on that stream.
    #[error("consumer {consumer:?} of stream {stream:?} does not exist")]
    ConsumerNotFound {
        /// The stream's name.
        stream: String,
        /// The consumer's name.
        consumer: String,
    },
    /// A create met an existing stream with other settings; nothing was changed.
    #[error("stream {stream:?} already exists with other settings: {differences}")]
    StreamConflict {
        /// The stream's name.
        stream: String,
        /// Each differing setting, `name: stored X, requested Y`.
        differences: String,
    },
    /// A create met an existing consumer with other settings; nothing was changed.
    #[error("consumer {consumer:?} of stream {stream:?} already exists with other settings: {differences}")]
    ConsumerConflict {
        /// The stream's name.
        stream: String,
        /// The consumer's name.
        consumer: String,
        /// Each differing setting, `name: stored X, requested Y`.
        differences: String,
    },
    /// The consumer's ordering by key cannot change now: it is running or has
    /// pending tasks, which were ordered (or not) under the old setting.
    /// Nothing was changed.
    #[error(
        "cannot change the ordering by key of consumer {consumer:?} of stream {stream:?}: {reason}; \
         pause it and let its pending tasks finish (or cancel them) first"
    )]
    OrderingInUse {
        /// The stream's name.
        stream: String,
        /// The consumer's name.
        consumer: String,
        /// Why: not paused, or how many tasks are pending.
        reason: String,
    },
    /// No task of that consumer for that event.
    #[error("consumer {consumer:?} of stream {stream:?} has no task for event {event_id}")]
    TaskNotFound {
        /// The stream's name.
        stream: String,
        /// The consumer's name.
        consumer: String,
        /// The event.
        event_id: EventId,
    },
    /// The task is in a state that does not allow the action; nothing was changed.
    #[error("cannot {action} the task of event {event_id} of consumer {consumer:?} (stream {stream:?}): it is {state}, and only {allowed} tasks can be")]
    TaskState {
        /// The stream's name.
        stream: String,
        /// The consumer's name.
        consumer: String,
        /// The event.
        event_id: EventId,
        /// The state it is in.
        state: crate::ids::TaskState,
        /// What was asked: `cancel` or `retry`.
        action: &'static str,
        /// The states that allow it.
        allowed: String,
    },
    /// The consumer's position is ahead of this server's transaction ids: the
    /// database was restored from a dump or moved by logical replication, and
    /// taking the position as it is would skip every new event. Nothing is
    /// claimed until the position is reset ([`crate::reset_position`]).
    #[error(
        "the position of consumer {consumer:?} of stream {stream:?} is ahead of this server's transactions: \
         the database was restored or moved from another cluster; replay with \
         `reset_position` (from the beginning, a time, an event, or now)"
    )]
    PositionAhead {
        /// The stream's name.
        stream: String,
        /// The consumer's name.
        consumer: String,
    },
    /// The Sluice schema is missing: run the migrations first.
    #[error(
        "the Sluice schema is not installed in this database: run `sluice migrate up` or `sluice::migrate(&pool)`"
    )]
    NotMigrated,
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// Maps a database error, turning "schema sluice does not exist" into [`Error::NotMigrated`].
    pub(crate) fn db(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            // 3F000 invalid_schema_name, 42P01 undefined_table
            if matches!(db.code().as_deref(), Some("3F000") | Some("42P01")) && db.message().contains("sluice") {
                return Error::NotMigrated;
            }
        }
        Error::Database(err)
    }
}

/// Errors of ack, nack and defer: settling a task a worker holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The attempt's lease token no longer holds the task: its lease ended and
    /// the task was handed out again (or released, or settled already, or
    /// retried by hand). Nothing was changed; inside a transaction, roll it back.
    #[error("lease lost: event {event_id} of consumer {consumer:?} is no longer held by attempt {attempt}; nothing was changed")]
    LeaseLost {
        /// The consumer's name.
        consumer: String,
        /// The task's event.
        event_id: EventId,
        /// The attempt that tried to settle the task.
        attempt: i32,
    },
    /// The message was already acked, nacked or deferred by this handler.
    #[error("event {event_id} of consumer {consumer:?} was already settled by this attempt")]
    AlreadySettled {
        /// The consumer's name.
        consumer: String,
        /// The task's event.
        event_id: EventId,
    },
    /// Input refused before anything was changed.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Errors of the migration runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The database has a Sluice migration this build does not know: it was
    /// migrated by a newer Sluice.
    #[error("the database has Sluice migration {version} which this version of Sluice does not know; upgrade Sluice")]
    UnknownVersion {
        /// The unknown version.
        version: i64,
    },
    /// An applied migration's text differs from the one embedded in this build.
    #[error("Sluice migration {version} ({description}) was changed after it was applied: checksums differ")]
    ChecksumMismatch {
        /// The migration's version.
        version: i64,
        /// The migration's description.
        description: String,
    },
    /// A migration's SQL failed; its transaction was rolled back.
    #[error("Sluice migration {version} ({description}) failed: {source}")]
    Failed {
        /// The migration's version.
        version: i64,
        /// The migration's description.
        description: String,
        /// The database's error.
        source: sqlx::Error,
    },
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}
