//! Publishing events: one or a batch, in one statement, on any executor.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, InvalidInput};
use crate::ids::{EventId, Priority};
use crate::pooler::{on_db, Db};
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
#[tracing::instrument(name = "sluice.publish", skip_all, fields(stream = %stream, subject = %event.subject))]
pub async fn publish<'c>(db: impl Into<Db<'c>>, stream: &str, event: NewEvent) -> Result<EventId, Error> {
    let ids = insert(db.into(), stream, vec![event]).await?;
    Ok(ids[0])
}

/// Publishes a batch of events to `stream` in one statement and returns their
/// ids in the order given.
#[tracing::instrument(name = "sluice.publish_batch", skip_all, fields(stream = %stream, events = tracing::field::Empty))]
pub async fn publish_batch<'c, I>(db: impl Into<Db<'c>>, stream: &str, events: I) -> Result<Vec<EventId>, Error>
where
    I: IntoIterator<Item = NewEvent>,
{
    let events: Vec<NewEvent> = events.into_iter().collect();
    tracing::Span::current().record("events", events.len());
    insert(db.into(), stream, events).await
}

/// The publish itself, in the span of `publish` or `publish_batch`: with the `otel` feature, each
/// event's metadata carries that span's trace context (unless it has a
/// `traceparent` of its own already).
async fn insert(db: Db<'_>, stream: &str, events: Vec<NewEvent>) -> Result<Vec<EventId>, Error> {
    check_name("stream", stream)?;
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
    #[cfg(feature = "otel")]
    let context = crate::trace_context::current();
    for e in events {
        #[cfg(feature = "otel")]
        let e = {
            let mut e = e;
            if let Some(context) = &context {
                context.inject(&mut e.metadata);
            }
            e
        };
        metadata.push(serde_json::to_string(&e.metadata).expect("a string map always serializes"));
        subjects.push(e.subject);
        payloads.push(e.payload);
        keys.push(e.key);
        priorities.push(i16::from(e.priority.get()));
        deliver_at.push(e.deliver_at);
    }
    let publish = sqlx::query_as(sql::PUBLISH)
        .bind(stream)
        .bind(subjects)
        .bind(payloads)
        .bind(metadata)
        .bind(keys)
        .bind(priorities)
        .bind(deliver_at)
        .bind(carries_notification(stream));
    let row: Option<(i32, Option<Vec<i64>>, i64)> = on_db!(db, publish, fetch_optional).await.map_err(Error::db)?;
    match row {
        Some((_, Some(ids), _)) => {
            crate::metrics::published(stream, ids.len());
            Ok(ids.into_iter().map(EventId).collect())
        }
        _ => Err(Error::StreamNotFound { stream: stream.to_string() }),
    }
}

/// The default of [`set_notify_interval`]: at most one publish per stream in
/// this long, in this process, notifies the stream's subscribers.
///
/// A transaction that has called `pg_notify` takes one cluster-wide lock at
/// its commit and holds it through the commit's WAL flush, so notifying
/// commits go one at a time: from 8 concurrent clients, single-event
/// publishes committed about 4× less often with a notification than without.
/// The publish usually runs in the caller's own transaction, whose commit
/// Sluice cannot see, so the notification cannot wait for it; instead only
/// the first publish of a stream in each interval carries one, and the
/// others commit as plain inserts. A subscriber woken by it keeps fetching
/// while work arrives and, when a fetch comes back empty, looks again a few
/// times over the next quarter second before it waits for the next
/// notification or its poll (docs/DESIGN.md, "How work flows"): events committed
/// just after the notifying one are found that way. A notifying transaction
/// that rolls back, or commits long after the events published beside it,
/// delays those events until the next notification or poll.
pub const NOTIFY_INTERVAL: Duration = Duration::from_millis(5);

/// The interval in force, in microseconds.
static NOTIFY_INTERVAL_US: AtomicU64 = AtomicU64::new(NOTIFY_INTERVAL.as_micros() as u64);

/// Sets how often, at most, one process's publishes to a stream notify its
/// subscribers (default [`NOTIFY_INTERVAL`], 5 ms), for every stream and
/// database of the process. Longer: fewer notifying commits (which go one at
/// a time cluster-wide) when many clients publish at once; shorter or zero
/// (every publish notifies): fewer events left to the subscribers' follow-up
/// fetches and polls. Returns the previous interval.
pub fn set_notify_interval(interval: Duration) -> Duration {
    let us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(NOTIFY_INTERVAL_US.swap(us, Ordering::Relaxed))
}

/// When each stream's last notification left this process.
static LAST_NOTIFIED: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Default::default);

/// Whether this publish to `stream` carries the stream's notification.
fn carries_notification(stream: &str) -> bool {
    let every = Duration::from_micros(NOTIFY_INTERVAL_US.load(Ordering::Relaxed));
    if every.is_zero() {
        return true;
    }
    let now = Instant::now();
    let mut last = LAST_NOTIFIED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(at) = last.get_mut(stream) {
        if now.duration_since(*at) < every {
            return false;
        }
        *at = now;
        return true;
    }
    // Streams are few; forget the quiet ones if a process publishes to very many.
    if last.len() >= 10_000 {
        last.retain(|_, at| now.duration_since(*at) < every);
    }
    last.insert(stream.to_string(), now);
    true
}

/// Refuses times outside what Postgres stores (4713 BC to 294276 AD).
pub(crate) fn check_time(setting: &'static str, t: DateTime<Utc>) -> Result<(), InvalidInput> {
    use chrono::Datelike;
    if !(-4712..=294_275).contains(&t.year()) {
        return Err(InvalidInput::Setting { setting, reason: format!("{t} is outside what Postgres can store") });
    }
    Ok(())
}
