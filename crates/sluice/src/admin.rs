//! Streams and consumers: create (idempotent), get, list, delete.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use crate::error::{Error, InvalidInput};
use crate::ids::EventId;
use crate::pooler::on_pool;
use crate::sql;
use crate::subject::{check_name, check_pattern, MAX_PATTERNS};

/// A stream: a named, append-only log of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// The stream's name.
    pub name: String,
    /// How long events are kept (see [`StreamOptions::event_retention`] for
    /// what is guaranteed).
    pub event_retention: Duration,
    /// When the stream was created.
    pub created_at: DateTime<Utc>,
}

/// Settings of a new stream.
///
/// ```
/// use std::time::Duration;
/// let options = sluice::StreamOptions::default().event_retention(Duration::from_secs(86_400));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    event_retention: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { event_retention: Duration::from_secs(7 * 86_400) }
    }
}

impl StreamOptions {
    /// How long events are kept (default 7 days, more than zero).
    ///
    /// Events are stored in partitions of `sluice.events` shared by every
    /// stream and dropped whole, never row by row (docs/OPERATIONS.md,
    /// "Event partitions"). What is guaranteed, with R the longest event
    /// retention of any stream (this one's, when it is the longest):
    ///
    /// - an event is kept at least R after it was written;
    /// - once handled by every consumer (no pending task, every consumer's
    ///   position past it), it is gone within R + the partition age + three
    ///   intervals of the partitions' maintenance, while some subscriber runs
    ///   (or `sluice cleanup` is run). The partition age is
    ///   [`crate::EventPartitioning::max_age`] (default 1 hour, at least
    ///   1 s), or a hundredth of R when that is longer; the maintenance runs
    ///   every [`crate::EventPartitioning::every`] (default 5 s). A
    ///   transaction left open while its partition is closed delays this
    ///   until it ends;
    /// - a lagging or paused consumer holds back what it has not
    ///   materialized, and the events of dead letters and cancelled tasks
    ///   stay as long as the task (so it can be listed, retried and
    ///   cancelled for its whole dead retention).
    ///
    /// Change the partition age with [`crate::set_event_partitioning`] or
    /// `sluice partitions set --max-age`.
    pub fn event_retention(mut self, retention: Duration) -> Self {
        self.event_retention = retention;
        self
    }
}

#[derive(FromRow)]
struct StreamRow {
    #[allow(dead_code)]
    id: i32,
    name: String,
    event_retention_ms: i64,
    created_at: DateTime<Utc>,
}

impl From<StreamRow> for Stream {
    fn from(r: StreamRow) -> Self {
        Stream { name: r.name, event_retention: ms_to_duration(r.event_retention_ms), created_at: r.created_at }
    }
}

/// The longest duration any setting takes: Postgres intervals stop near 178
/// million years, and nothing in a queue needs more than a century.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 366 * 86_400);

pub(crate) fn duration_ms(setting: &'static str, d: Duration) -> Result<i64, InvalidInput> {
    if d > MAX_DURATION {
        return Err(InvalidInput::Setting { setting, reason: format!("{d:?} is more than the limit of 100 years") });
    }
    Ok(d.as_millis() as i64)
}

pub(crate) fn ms_to_duration(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Creates a stream. Creating one that exists with the same settings returns
/// it; with other settings it is [`Error::StreamConflict`], naming each
/// difference, and the stored stream is left as it was.
#[tracing::instrument(name = "sluice.create_stream", skip_all, fields(stream = %name))]
pub async fn create_stream(pool: &PgPool, name: &str, options: StreamOptions) -> Result<Stream, Error> {
    check_name("stream", name)?;
    let retention_ms = check_event_retention(&options)?;
    let created: Option<StreamRow> =
        on_pool!(pool, sqlx::query_as(sql::STREAM_CREATE).bind(name).bind(retention_ms), fetch_optional)
            .await
            .map_err(Error::db)?;
    if let Some(row) = created {
        return Ok(row.into());
    }
    let existing = get_stream(pool, name).await?;
    let mut diff = Differences::default();
    diff.check("event_retention", &existing.event_retention, &options.event_retention);
    match diff.finish() {
        None => Ok(existing),
        Some(differences) => Err(Error::StreamConflict { stream: name.to_string(), differences }),
    }
}

/// Changes a stream's settings (its event retention). Nothing stored is
/// lost by the change: retention only ever removes events every consumer
/// has materialized and no pending task needs.
#[tracing::instrument(name = "sluice.update_stream", skip_all, fields(stream = %name))]
pub async fn update_stream(pool: &PgPool, name: &str, options: StreamOptions) -> Result<Stream, Error> {
    check_name("stream", name)?;
    let retention_ms = check_event_retention(&options)?;
    let updated: Option<i32> =
        on_pool!(pool, sqlx::query_scalar(sql::STREAM_UPDATE).bind(name).bind(retention_ms), fetch_optional)
            .await
            .map_err(Error::db)?;
    match updated {
        Some(_) => get_stream(pool, name).await,
        None => Err(Error::StreamNotFound { stream: name.to_string() }),
    }
}

fn check_event_retention(options: &StreamOptions) -> Result<i64, InvalidInput> {
    if options.event_retention.is_zero() {
        return Err(InvalidInput::Setting { setting: "event_retention", reason: "must be more than zero".into() });
    }
    duration_ms("event_retention", options.event_retention)
}

/// The stream of that name, or [`Error::StreamNotFound`].
pub async fn get_stream(pool: &PgPool, name: &str) -> Result<Stream, Error> {
    check_name("stream", name)?;
    let row: Option<StreamRow> =
        on_pool!(pool, sqlx::query_as(sql::STREAM_GET).bind(name), fetch_optional).await.map_err(Error::db)?;
    row.map(Into::into).ok_or_else(|| Error::StreamNotFound { stream: name.to_string() })
}

/// Every stream, by name.
pub async fn list_streams(pool: &PgPool) -> Result<Vec<Stream>, Error> {
    let rows: Vec<StreamRow> = on_pool!(pool, sqlx::query_as(sql::STREAM_LIST), fetch_all).await.map_err(Error::db)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Deletes a stream with its events, consumers and tasks.
#[tracing::instrument(name = "sluice.delete_stream", skip_all, fields(stream = %name))]
pub async fn delete_stream(pool: &PgPool, name: &str) -> Result<(), Error> {
    check_name("stream", name)?;
    let deleted: Option<i32> =
        on_pool!(pool, sqlx::query_scalar(sql::STREAM_DELETE).bind(name), fetch_optional).await.map_err(Error::db)?;
    deleted.map(|_| ()).ok_or_else(|| Error::StreamNotFound { stream: name.to_string() })
}

/// Where a new consumer starts in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Every event the stream holds, then every new one.
    Beginning,
    /// Events created at or after this time.
    At(DateTime<Utc>),
    /// Only events published after the consumer is created (the default).
    #[default]
    Now,
}

/// Settings of a new consumer. Only the stream and the name are required.
///
/// ```
/// use std::time::Duration;
/// use sluice::{ConsumerOptions, Start};
/// let options = ConsumerOptions::default()
///     .include(["orders.eu.*"])
///     .exclude(["orders.*.deleted"])
///     .start(Start::Beginning)
///     .max_attempts(5)
///     .lease(Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    include: Vec<String>,
    exclude: Vec<String>,
    start: Start,
    max_attempts: i32,
    backoff_initial: Duration,
    backoff_max: Duration,
    lease: Duration,
    completed_retention: Duration,
    dead_retention: Duration,
    log_retention: Duration,
    ordered_by_key: bool,
    hold_key_on_dead_letter: bool,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            include: vec![">".to_string()],
            exclude: Vec::new(),
            start: Start::Now,
            max_attempts: 25,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            lease: Duration::from_secs(30),
            completed_retention: Duration::ZERO,
            dead_retention: ConsumerOptions::DEAD_RETENTION_DEFAULT,
            log_retention: ConsumerOptions::LOG_RETENTION_DEFAULT,
            ordered_by_key: false,
            hold_key_on_dead_letter: false,
        }
    }
}

impl ConsumerOptions {
    /// How long dead letters are kept, by default: 7 days.
    pub const DEAD_RETENTION_DEFAULT: Duration = Duration::from_secs(7 * 86_400);
    /// How long the audit log is kept, by default: 30 days.
    pub const LOG_RETENTION_DEFAULT: Duration = Duration::from_secs(30 * 86_400);

    /// Subject patterns to deliver (default `>`, everything). NATS wildcards:
    /// `*` matches one token, a final `>` one or more.
    pub fn include<I: IntoIterator<Item = S>, S: Into<String>>(mut self, patterns: I) -> Self {
        self.include = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// Subject patterns never to deliver, even when included (exclude wins).
    pub fn exclude<I: IntoIterator<Item = S>, S: Into<String>>(mut self, patterns: I) -> Self {
        self.exclude = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// Where the consumer starts (default [`Start::Now`]). Applies only when
    /// the consumer is created.
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Attempts before a failing task is discarded (default 25, 1 to 1000).
    pub fn max_attempts(mut self, attempts: i32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The retry backoff (defaults 1 s and 1 h): after failed attempt `n` the
    /// delay is `initial × 2^(n-1)`, capped at `max`, with jitter that draws
    /// it between half and all of that, so a burst of failures spreads out.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// The visibility timeout: how long a claimed task belongs to its worker
    /// unless extended (default 30 s, at least 1 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long completed tasks are kept for inspection (default zero: a
    /// task is deleted when it is acked).
    pub fn completed_retention(mut self, retention: Duration) -> Self {
        self.completed_retention = retention;
        self
    }

    /// How long dead letters — discarded and cancelled tasks, with every
    /// attempt's error — are kept for inspection and retry by hand (default
    /// 7 days, more than zero). Housekeeping removes them afterwards.
    pub fn dead_retention(mut self, retention: Duration) -> Self {
        self.dead_retention = retention;
        self
    }

    /// How long the audit log of the consumer's tasks (`task_log`) is kept
    /// (default 30 days, more than zero).
    pub fn log_retention(mut self, retention: Duration) -> Self {
        self.log_retention = retention;
        self
    }

    /// FIFO per key: tasks of events with the same key are handed out one at
    /// a time, in the order of their events, across every subscriber and
    /// process. While a key's task runs, waits for a retry or is deferred,
    /// the key's later tasks wait (in the state `waiting`); other keys and
    /// events without a key are not held up. Priorities order work across
    /// keys, never within one. A dead letter lets its key's next task go,
    /// unless [`ConsumerOptions::hold_key_on_dead_letter`].
    ///
    /// Changing it on an existing consumer ([`update_consumer`]) needs the
    /// consumer paused with no pending task, or it is
    /// [`Error::OrderingInUse`].
    ///
    /// ```
    /// use sluice::ConsumerOptions;
    /// let per_account = ConsumerOptions::default().ordered_by_key();
    /// ```
    pub fn ordered_by_key(mut self) -> Self {
        self.ordered_by_key = true;
        self
    }

    /// Ordered by key (as [`ConsumerOptions::ordered_by_key`]), and a dead
    /// letter holds its key: the key's later tasks wait until it is retried
    /// ([`crate::retry_task`]) or cancelled ([`crate::cancel_task`]).
    pub fn hold_key_on_dead_letter(mut self) -> Self {
        self.ordered_by_key = true;
        self.hold_key_on_dead_letter = true;
        self
    }

    /// Not ordered by key (the default): undoes
    /// [`ConsumerOptions::ordered_by_key`] and
    /// [`ConsumerOptions::hold_key_on_dead_letter`], for [`update_consumer`]
    /// with the settings of an existing consumer.
    pub fn unordered(mut self) -> Self {
        self.ordered_by_key = false;
        self.hold_key_on_dead_letter = false;
        self
    }

    fn validate(&self) -> Result<(), InvalidInput> {
        for (setting, retention) in [("dead_retention", self.dead_retention), ("log_retention", self.log_retention)] {
            if retention.is_zero() {
                return Err(InvalidInput::Setting { setting, reason: "must be more than zero".into() });
            }
            duration_ms(setting, retention)?;
        }
        duration_ms("completed_retention", self.completed_retention)?;
        if self.include.is_empty() {
            return Err(InvalidInput::Setting {
                setting: "include",
                reason: "a consumer includes at least one pattern (use \">\" for everything)".into(),
            });
        }
        for (setting, list) in [("include", &self.include), ("exclude", &self.exclude)] {
            if list.len() > MAX_PATTERNS {
                return Err(InvalidInput::Setting {
                    setting,
                    reason: format!("{} patterns; a consumer takes at most {MAX_PATTERNS}", list.len()),
                });
            }
        }
        for p in self.include.iter().chain(&self.exclude) {
            check_pattern(p)?;
        }
        if !(1..=1000).contains(&self.max_attempts) {
            return Err(InvalidInput::Setting {
                setting: "max_attempts",
                reason: format!("{} is outside 1..=1000", self.max_attempts),
            });
        }
        if self.backoff_max < self.backoff_initial {
            return Err(InvalidInput::Setting {
                setting: "backoff",
                reason: "the maximum delay is smaller than the initial one".into(),
            });
        }
        if self.lease < Duration::from_secs(1) {
            return Err(InvalidInput::Setting { setting: "lease", reason: "a lease is at least 1 second".into() });
        }
        Ok(())
    }
}

/// A consumer: a named subscription to one stream, with its own position and tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// The stream it reads.
    pub stream: String,
    /// The consumer's name, unique within the stream.
    pub name: String,
    /// Subject patterns delivered.
    pub include: Vec<String>,
    /// Subject patterns never delivered.
    pub exclude: Vec<String>,
    /// Events before this time are not delivered (a consumer started at a time).
    pub start_from: Option<DateTime<Utc>>,
    /// Attempts before a failing task is discarded.
    pub max_attempts: i32,
    /// First retry delay.
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Visibility timeout of a claimed task.
    pub lease: Duration,
    /// How long completed tasks are kept.
    pub completed_retention: Duration,
    /// How long discarded and cancelled tasks are kept.
    pub dead_retention: Duration,
    /// How long the audit log is kept.
    pub log_retention: Duration,
    /// FIFO per key ([`ConsumerOptions::ordered_by_key`]).
    pub ordered_by_key: bool,
    /// A dead letter holds its key ([`ConsumerOptions::hold_key_on_dead_letter`]).
    pub hold_key_on_dead_letter: bool,
    /// Whether claiming is paused.
    pub paused: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct ConsumerRow {
    #[allow(dead_code)]
    id: i32,
    stream: String,
    name: String,
    include_subjects: Vec<String>,
    exclude_subjects: Vec<String>,
    start_from: Option<DateTime<Utc>>,
    max_attempts: i32,
    backoff_initial_ms: i64,
    backoff_max_ms: i64,
    lease_ms: i64,
    completed_retention_ms: i64,
    dead_retention_ms: i64,
    log_retention_ms: i64,
    ordered_by_key: bool,
    hold_key_on_dead_letter: bool,
    paused: bool,
    created_at: DateTime<Utc>,
}

impl From<ConsumerRow> for Consumer {
    fn from(r: ConsumerRow) -> Self {
        Consumer {
            stream: r.stream,
            name: r.name,
            include: r.include_subjects,
            exclude: r.exclude_subjects,
            start_from: r.start_from,
            max_attempts: r.max_attempts,
            backoff_initial: ms_to_duration(r.backoff_initial_ms),
            backoff_max: ms_to_duration(r.backoff_max_ms),
            lease: ms_to_duration(r.lease_ms),
            completed_retention: ms_to_duration(r.completed_retention_ms),
            dead_retention: ms_to_duration(r.dead_retention_ms),
            log_retention: ms_to_duration(r.log_retention_ms),
            ordered_by_key: r.ordered_by_key,
            hold_key_on_dead_letter: r.hold_key_on_dead_letter,
            paused: r.paused,
            created_at: r.created_at,
        }
    }
}

/// Creates a consumer of `stream`. Creating one that exists with the same
/// settings returns it; with other settings it is [`Error::ConsumerConflict`],
/// naming each difference, and the stored consumer is left as it was.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// use sluice::{create_consumer, ConsumerOptions};
/// create_consumer(&pool, "orders", "billing", ConsumerOptions::default().include(["orders.*.created"])).await?;
/// # Ok(()) }
/// ```
#[tracing::instrument(name = "sluice.create_consumer", skip_all, fields(stream = %stream, consumer = %name))]
pub async fn create_consumer(
    pool: &PgPool,
    stream: &str,
    name: &str,
    options: ConsumerOptions,
) -> Result<Consumer, Error> {
    check_name("stream", stream)?;
    check_name("consumer", name)?;
    options.validate()?;
    let (start_kind, start_at) = match options.start {
        Start::Beginning => ("beginning", None),
        Start::At(t) => ("time", Some(t)),
        Start::Now => ("now", None),
    };
    let create = bind_settings(sqlx::query_scalar(sql::CONSUMER_CREATE), stream, name, &options)?
        .bind(start_kind)
        .bind(start_at)
        .bind(options.ordered_by_key)
        .bind(options.hold_key_on_dead_letter);
    let created: Option<i32> = on_pool!(pool, create, fetch_optional).await.map_err(Error::db)?;
    let existing = match get_consumer(pool, stream, name).await {
        Err(Error::ConsumerNotFound { .. }) if created.is_none() => {
            // Nothing inserted and nothing there: the stream is missing.
            get_stream(pool, stream).await?;
            return Err(Error::ConsumerNotFound { stream: stream.into(), consumer: name.into() });
        }
        other => other?,
    };
    if created.is_some() {
        return Ok(existing);
    }
    let mut diff = Differences::default();
    diff.check("include", &existing.include, &options.include);
    diff.check("exclude", &existing.exclude, &options.exclude);
    diff.check("max_attempts", &existing.max_attempts, &options.max_attempts);
    diff.check("backoff_initial", &existing.backoff_initial, &options.backoff_initial);
    diff.check("backoff_max", &existing.backoff_max, &options.backoff_max);
    diff.check("lease", &existing.lease, &options.lease);
    diff.check("completed_retention", &existing.completed_retention, &options.completed_retention);
    diff.check("dead_retention", &existing.dead_retention, &options.dead_retention);
    diff.check("log_retention", &existing.log_retention, &options.log_retention);
    diff.check("ordered_by_key", &existing.ordered_by_key, &options.ordered_by_key);
    diff.check("hold_key_on_dead_letter", &existing.hold_key_on_dead_letter, &options.hold_key_on_dead_letter);
    match diff.finish() {
        None => Ok(existing),
        Some(differences) => {
            Err(Error::ConsumerConflict { stream: stream.to_string(), consumer: name.to_string(), differences })
        }
    }
}

/// Changes a consumer's settings: filters, attempts, backoff, lease,
/// retentions and ordering by key (where it started stays as it was).
/// Running subscribers pick the new filters up at their next refill and the
/// retentions at their next housekeeping run; nothing already stored is lost
/// by the change itself. The ordering by key changes only while the consumer
/// is paused with no pending task, else [`Error::OrderingInUse`] and nothing
/// changes.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// use std::time::Duration;
/// let billing = sluice::get_consumer(&pool, "orders", "billing").await?;
/// let options = sluice::ConsumerOptions::from(&billing).dead_retention(Duration::from_secs(30 * 86_400));
/// sluice::update_consumer(&pool, "orders", "billing", options).await?;
/// # Ok(()) }
/// ```
#[tracing::instrument(name = "sluice.update_consumer", skip_all, fields(stream = %stream, consumer = %name))]
pub async fn update_consumer(
    pool: &PgPool,
    stream: &str,
    name: &str,
    options: ConsumerOptions,
) -> Result<Consumer, Error> {
    check_name("stream", stream)?;
    check_name("consumer", name)?;
    options.validate()?;
    // One transaction: the ordering is checked under the consumer's lock,
    // which waits for a refill in progress and holds off the next ones.
    let mut tx = pool.begin().await.map_err(Error::db)?;
    let locked: Option<(i32, bool, bool, bool)> = sqlx::query_as(sql::CONSUMER_LOCK)
        .persistent(false)
        .bind(stream)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::db)?;
    let Some((id, paused, ordered, hold)) = locked else {
        drop(tx);
        get_stream(pool, stream).await?;
        return Err(Error::ConsumerNotFound { stream: stream.to_string(), consumer: name.to_string() });
    };
    if (ordered, hold) != (options.ordered_by_key, options.hold_key_on_dead_letter) {
        let in_use =
            |reason: String| Error::OrderingInUse { stream: stream.to_string(), consumer: name.to_string(), reason };
        if !paused {
            return Err(in_use("it is not paused".into()));
        }
        let pending: i64 = sqlx::query_scalar(sql::CONSUMER_PENDING)
            .persistent(false)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(Error::db)?;
        if pending > 0 {
            return Err(in_use(format!("{pending} of its tasks are pending")));
        }
        sqlx::query(sql::CONSUMER_SET_ORDER)
            .persistent(false)
            .bind(id)
            .bind(options.ordered_by_key)
            .bind(options.hold_key_on_dead_letter)
            .execute(&mut *tx)
            .await
            .map_err(Error::db)?;
    }
    bind_settings(sqlx::query_scalar(sql::CONSUMER_UPDATE), stream, name, &options)?
        .persistent(false)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::db)?;
    tx.commit().await.map_err(Error::db)?;
    get_consumer(pool, stream, name).await
}

type ScalarQuery<'q> = sqlx::query::QueryScalar<'q, sqlx::Postgres, i32, sqlx::postgres::PgArguments>;

/// Binds $1 to $11 of consumer_create.sql and consumer_update.sql: the
/// stream, the name and every setting but the start.
fn bind_settings<'q>(
    query: ScalarQuery<'q>,
    stream: &'q str,
    name: &'q str,
    options: &'q ConsumerOptions,
) -> Result<ScalarQuery<'q>, InvalidInput> {
    Ok(query
        .bind(stream)
        .bind(name)
        .bind(&options.include)
        .bind(&options.exclude)
        .bind(options.max_attempts)
        .bind(duration_ms("backoff", options.backoff_initial)?)
        .bind(duration_ms("backoff", options.backoff_max)?)
        .bind(duration_ms("lease", options.lease)?)
        .bind(duration_ms("completed_retention", options.completed_retention)?)
        .bind(duration_ms("dead_retention", options.dead_retention)?)
        .bind(duration_ms("log_retention", options.log_retention)?))
}

impl From<&Consumer> for ConsumerOptions {
    /// The settings of an existing consumer, to change some of them with
    /// [`update_consumer`]. The start is `Now` (it applies only to creation).
    fn from(c: &Consumer) -> Self {
        ConsumerOptions {
            include: c.include.clone(),
            exclude: c.exclude.clone(),
            start: Start::Now,
            max_attempts: c.max_attempts,
            backoff_initial: c.backoff_initial,
            backoff_max: c.backoff_max,
            lease: c.lease,
            completed_retention: c.completed_retention,
            dead_retention: c.dead_retention,
            log_retention: c.log_retention,
            ordered_by_key: c.ordered_by_key,
            hold_key_on_dead_letter: c.hold_key_on_dead_letter,
        }
    }
}

/// The consumer `name` of `stream`, or [`Error::ConsumerNotFound`].
pub async fn get_consumer(pool: &PgPool, stream: &str, name: &str) -> Result<Consumer, Error> {
    check_name("stream", stream)?;
    check_name("consumer", name)?;
    let row: Option<ConsumerRow> =
        on_pool!(pool, sqlx::query_as(sql::CONSUMER_GET).bind(stream).bind(name), fetch_optional)
            .await
            .map_err(Error::db)?;
    row.map(Into::into)
        .ok_or_else(|| Error::ConsumerNotFound { stream: stream.to_string(), consumer: name.to_string() })
}

/// The consumers of `stream` (every stream's when `None`), by stream and name.
pub async fn list_consumers(pool: &PgPool, stream: Option<&str>) -> Result<Vec<Consumer>, Error> {
    if let Some(stream) = stream {
        get_stream(pool, stream).await?;
    }
    let rows: Vec<ConsumerRow> =
        on_pool!(pool, sqlx::query_as(sql::CONSUMER_LIST).bind(stream), fetch_all).await.map_err(Error::db)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Pauses a consumer: its subscribers keep running (and heartbeating) but
/// claim nothing until [`resume_consumer`]; tasks already running finish.
/// Its events keep accumulating for it: the subscribers' refills go on
/// materializing them as available tasks. Pausing a paused consumer changes
/// nothing. Returns the consumer as it is now.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// let billing = sluice::pause_consumer(&pool, "orders", "billing").await?;
/// assert!(billing.paused);
/// // ... fix what the handler needs ...
/// sluice::resume_consumer(&pool, "orders", "billing").await?;
/// # Ok(()) }
/// ```
#[tracing::instrument(name = "sluice.pause_consumer", skip_all, fields(stream = %stream, consumer = %name))]
pub async fn pause_consumer(pool: &PgPool, stream: &str, name: &str) -> Result<Consumer, Error> {
    set_paused(pool, stream, name, true).await
}

/// Resumes a paused consumer: its subscribers claim again at once (those
/// that listen for notifications are woken; the others at their next poll).
/// Resuming a consumer that is not paused changes nothing.
#[tracing::instrument(name = "sluice.resume_consumer", skip_all, fields(stream = %stream, consumer = %name))]
pub async fn resume_consumer(pool: &PgPool, stream: &str, name: &str) -> Result<Consumer, Error> {
    set_paused(pool, stream, name, false).await
}

async fn set_paused(pool: &PgPool, stream: &str, name: &str, paused: bool) -> Result<Consumer, Error> {
    check_name("stream", stream)?;
    check_name("consumer", name)?;
    let set = sqlx::query_as(sql::CONSUMER_PAUSE).bind(stream).bind(name).bind(paused);
    let updated: Option<(i32, i64)> = on_pool!(pool, set, fetch_optional).await.map_err(Error::db)?;
    match updated {
        Some(_) => get_consumer(pool, stream, name).await,
        None => {
            get_stream(pool, stream).await?;
            Err(Error::ConsumerNotFound { stream: stream.to_string(), consumer: name.to_string() })
        }
    }
}

/// Deletes a consumer with its tasks.
#[tracing::instrument(name = "sluice.delete_consumer", skip_all, fields(stream = %stream, consumer = %name))]
pub async fn delete_consumer(pool: &PgPool, stream: &str, name: &str) -> Result<(), Error> {
    check_name("stream", stream)?;
    check_name("consumer", name)?;
    let deleted: Option<i32> =
        on_pool!(pool, sqlx::query_scalar(sql::CONSUMER_DELETE).bind(stream).bind(name), fetch_optional)
            .await
            .map_err(Error::db)?;
    match deleted {
        Some(_) => Ok(()),
        None => {
            get_stream(pool, stream).await?;
            Err(Error::ConsumerNotFound { stream: stream.to_string(), consumer: name.to_string() })
        }
    }
}

/// Where [`reset_position`] moves a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replay {
    /// Every event the stream holds.
    Beginning,
    /// Events created at or after this time.
    At(DateTime<Utc>),
    /// Events from this one on (by id).
    Event(EventId),
    /// Only events published from now on: everything before is skipped.
    Now,
}

/// Moves a consumer's position: a replay. Events from there on are
/// materialized again: an event whose task was completed comes back as a new
/// task, one whose task is still pending (available, scheduled, running) or
/// dead (discarded, cancelled) is left as it is, never duplicated.
///
/// This is also the way out of [`Error::PositionAhead`], after a database
/// was restored from a dump or moved by logical replication: the stream's
/// events written under the old cluster's transaction ids are adopted by
/// this one, and the consumer replays from where it is told to.
///
/// Running subscribers of the consumer pick the new position up at their
/// next fetch.
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::Error> {
/// use sluice::{reset_position, Replay};
/// reset_position(&pool, "orders", "billing", Replay::At(chrono::Utc::now() - chrono::Duration::hours(1))).await?;
/// # Ok(()) }
/// ```
#[tracing::instrument(name = "sluice.reset_position", skip_all, fields(stream = %stream, consumer = %consumer))]
pub async fn reset_position(pool: &PgPool, stream: &str, consumer: &str, to: Replay) -> Result<(), Error> {
    check_name("stream", stream)?;
    check_name("consumer", consumer)?;
    let (kind, at, event) = match to {
        Replay::Beginning => ("beginning", None, None),
        Replay::At(t) => {
            crate::publish::check_time("replay", t)?;
            ("time", Some(t), None)
        }
        Replay::Event(id) => {
            if id.0 < 1 {
                return Err(InvalidInput::Setting {
                    setting: "replay",
                    reason: format!("event id {id} is not an event id: ids start at 1"),
                }
                .into());
            }
            ("event", None, Some(id.0))
        }
        Replay::Now => ("now", None, None),
    };
    let moved: Option<(i32, i64, i64, i64)> = on_pool!(
        pool,
        sqlx::query_as(sql::CONSUMER_RESET).bind(stream).bind(consumer).bind(kind).bind(at).bind(event),
        fetch_optional
    )
    .await
    .map_err(Error::db)?;
    match moved {
        Some((_, adopted, _, _)) => {
            tracing::info!(stream, consumer, ?to, adopted, "consumer position reset");
            Ok(())
        }
        None => {
            get_stream(pool, stream).await?;
            Err(Error::ConsumerNotFound { stream: stream.to_string(), consumer: consumer.to_string() })
        }
    }
}

/// Collects `setting: stored X, requested Y` for each differing setting.
#[derive(Default)]
struct Differences(String);

impl Differences {
    fn check<T: PartialEq + std::fmt::Debug>(&mut self, setting: &str, stored: &T, requested: &T) {
        if stored != requested {
            if !self.0.is_empty() {
                self.0.push_str("; ");
            }
            let _ = write!(self.0, "{setting}: stored {stored:?}, requested {requested:?}");
        }
    }

    fn finish(self) -> Option<String> {
        (!self.0.is_empty()).then_some(self.0)
    }
}
