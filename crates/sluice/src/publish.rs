//! Publishing events: one or a batch, in one statement, on any executor.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;

use crate::error::{Error, InvalidInput};
use crate::ids::{EventId, Priority};
use crate::sql;
use crate::subject::{check_name, check_subject, check_text, json_has_nul};

/// The largest payload accepted, as serialized JSON: 1 MiB.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// An event to publish: a subject, a JSON payload and optional extras.
///
/// ```
/// use sluice::NewEvent;
/// let event = NewEvent::new("orders.eu.created", &serde_json::json!({"id": 42}))?
///     .key("customer-7")
///     .metadata("trace_id", "abc");
/// # Ok::<(), sluice::InvalidInput>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    subject: String,
    payload: String,
    metadata: BTreeMap<String, String>,
    key: Option<String>,
    priority: Priority,
    deliver_at: Option<DateTime<Utc>>,
}

impl NewEvent {
    /// An event with a subject (`orders.eu.created`) and a payload that
    /// serializes to JSON. Fails on an invalid subject, a payload that does
    /// not serialize, or one larger than [`MAX_PAYLOAD_BYTES`].
    pub fn new<T: Serialize + ?Sized>(subject: impl Into<String>, payload: &T) -> Result<Self, InvalidInput> {
        let subject = subject.into();
        check_subject(&subject)?;
        let payload = serde_json::to_string(payload)
            .map_err(|e| InvalidInput::Payload { subject: subject.clone(), reason: e.to_string() })?;
        if json_has_nul(&payload) {
            return Err(InvalidInput::Payload {
                subject,
                reason: "it contains a NUL character (\\u0000), which Postgres jsonb cannot hold".into(),
            });
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(InvalidInput::Payload {
                subject,
                reason: format!("{} bytes of JSON is over the limit of {MAX_PAYLOAD_BYTES}", payload.len()),
            });
        }
        Ok(NewEvent {
            subject,
            payload,
            metadata: BTreeMap::new(),
            key: None,
            priority: Priority::LOWEST,
            deliver_at: None,
        })
    }

    /// Adds a metadata entry (string to string).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The ordering key (for example a customer id).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The priority of this event's tasks (default 1; 5 is claimed first).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Delivers the event no earlier than this time.
    pub fn deliver_at(mut self, at: DateTime<Utc>) -> Self {
        self.deliver_at = Some(at);
        self
    }

    /// The event's subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Checks what the builder methods could not refuse; `index` names the
    /// event in its batch.
    fn check_extras(&self, index: usize) -> Result<(), InvalidInput> {
        let at = |e: InvalidInput| match e {
            InvalidInput::Setting { setting, reason } => InvalidInput::Setting {
                setting,
                reason: format!("event {index} of the batch ({}): {reason}", self.subject),
            },
            other => other,
        };
        if let Some(key) = &self.key {
            if key.is_empty() || key.len() > 255 {
                return Err(at(InvalidInput::Setting {
                    setting: "key",
                    reason: format!("an ordering key is 1 to 255 bytes, this one is {}", key.len()),
                }));
            }
            check_text("key", key).map_err(at)?;
        }
        for (k, v) in &self.metadata {
            check_text("metadata", k).map_err(at)?;
            check_text("metadata", v).map_err(at)?;
        }
        if let Some(t) = self.deliver_at {
            check_time("deliver_at", t).map_err(at)?;
        }
        Ok(())
    }
}

/// Publishes one event to `stream` and returns its id. Runs on a pool, a
/// connection or the caller's transaction (`&mut *tx`): if that transaction
/// rolls back, the event never existed.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// let event = sluice::NewEvent::new("orders.eu.created", &serde_json::json!({"id": 1}))?;
/// let id = sluice::publish(&pool, "orders", event).await?;
/// # Ok(()) }
/// ```
pub async fn publish<'e>(db: impl PgExecutor<'e>, stream: &str, event: NewEvent) -> Result<EventId, Error> {
    let ids = publish_batch(db, stream, [event]).await?;
    Ok(ids[0])
}

/// Publishes a batch of events to `stream` in one statement and returns their
/// ids in the order given.
pub async fn publish_batch<'e, I>(db: impl PgExecutor<'e>, stream: &str, events: I) -> Result<Vec<EventId>, Error>
where
    I: IntoIterator<Item = NewEvent>,
{
    check_name("stream", stream)?;
    let events: Vec<NewEvent> = events.into_iter().collect();
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let n = events.len();
    let mut subjects = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut deliver_at = Vec::with_capacity(n);
    for (i, e) in events.iter().enumerate() {
        e.check_extras(i)?;
    }
    for e in events {
        metadata.push(serde_json::to_string(&e.metadata).expect("a string map always serializes"));
        subjects.push(e.subject);
        payloads.push(e.payload);
        keys.push(e.key);
        priorities.push(i16::from(e.priority.get()));
        deliver_at.push(e.deliver_at);
    }
    let row: Option<(i32, Option<Vec<i64>>, i64)> = sqlx::query_as(sql::PUBLISH)
        .bind(stream)
        .bind(subjects)
        .bind(payloads)
        .bind(metadata)
        .bind(keys)
        .bind(priorities)
        .bind(deliver_at)
        .fetch_optional(db)
        .await
        .map_err(Error::db)?;
    match row {
        Some((_, Some(ids), _)) => Ok(ids.into_iter().map(EventId).collect()),
        _ => Err(Error::StreamNotFound { stream: stream.to_string() }),
    }
}

/// Refuses times outside what Postgres stores (4713 BC to 294276 AD).
pub(crate) fn check_time(setting: &'static str, t: DateTime<Utc>) -> Result<(), InvalidInput> {
    use chrono::Datelike;
    if !(-4712..=294_275).contains(&t.year()) {
        return Err(InvalidInput::Setting { setting, reason: format!("{t} is outside what Postgres can store") });
    }
    Ok(())
}
