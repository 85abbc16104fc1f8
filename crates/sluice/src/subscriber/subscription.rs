//! What a subscriber works on and how: its settings, their named defaults
//! and their validation.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use crate::error::InvalidInput;
use crate::subject::check_name;

/// A retry delay computed from the attempt number that failed (1 for the first).
pub type BackoffFn = Arc<dyn Fn(i32) -> Duration + Send + Sync>;

/// Where a subscriber hears that events were published.
#[derive(Clone, Debug)]
pub(crate) enum Wakeups {
    /// LISTEN on a connection like the pool's (one per process and database).
    Listen,
    /// LISTEN on a connection to this URL, parsed when it was given (the
    /// error is reported when the subscription is validated).
    ListenAt(Result<Box<PgConnectOptions>, String>),
    /// No LISTEN: polls only.
    PollOnly,
}

/// What a subscriber works on and how. Required: the stream and the consumer;
/// every other setting has a default, named by a constant of this type.
///
/// ```
/// use std::time::Duration;
/// let subscription = sluice::Subscription::new("orders", "billing")
///     .concurrency(32)
///     .batch_size(200)
///     .handler_timeout(Duration::from_secs(60))
///     .poll_interval(Duration::from_millis(500));
/// ```
#[derive(Clone)]
pub struct Subscription {
    pub(crate) stream: String,
    pub(crate) consumer: String,
    pub(crate) concurrency: usize,
    pub(crate) batch_size: usize,
    /// Set by `batch_size`: the claim size does not adapt.
    pub(crate) batch_fixed: bool,
    pub(crate) max_batch_bytes: i64,
    pub(crate) poll_interval: Duration,
    pub(crate) lease: Option<Duration>,
    pub(crate) heartbeat: Duration,
    pub(crate) dead_after: Duration,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) db_timeout: Duration,
    pub(crate) refill_chunk: i32,
    pub(crate) prefetch: Option<usize>,
    pub(crate) backoff: Option<BackoffFn>,
    pub(crate) wakeups: Wakeups,
    pub(crate) credit: Option<super::Credit>,
    pub(crate) fetch_limit: Option<super::FetchLimit>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("concurrency", &self.concurrency)
            .field("batch_size", &self.batch_size)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("poll_interval", &self.poll_interval)
            .field("lease", &self.lease)
            .field("heartbeat", &self.heartbeat)
            .field("dead_after", &self.dead_after)
            .field("handler_timeout", &self.handler_timeout)
            .field("db_timeout", &self.db_timeout)
            .field(
                "wakeups",
                match &self.wakeups {
                    Wakeups::Listen => &"listen",
                    Wakeups::ListenAt(_) => &"listen_url",
                    Wakeups::PollOnly => &"poll_only",
                },
            )
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Handlers running at once, by default.
    pub const CONCURRENCY_DEFAULT: usize = 16;
    /// Tasks the first claim takes at most, by default; later claims adapt
    /// between [`BATCH_SIZE_MIN_DEFAULT`](Self::BATCH_SIZE_MIN_DEFAULT) and
    /// [`BATCH_SIZE_MAX_DEFAULT`](Self::BATCH_SIZE_MAX_DEFAULT).
    pub const BATCH_SIZE_DEFAULT: usize = 100;
    /// The smallest claim an adapting subscriber makes.
    pub const BATCH_SIZE_MIN_DEFAULT: usize = 10;
    /// The largest claim an adapting subscriber makes.
    pub const BATCH_SIZE_MAX_DEFAULT: usize = 1_000;
    /// Payload bytes one claim takes at most (about), by default: 64 MiB.
    pub const MAX_BATCH_BYTES_DEFAULT: i64 = 64 << 20;
    /// How often to look for work without a notification, by default.
    pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
    /// How often the worker reports that it is alive, by default.
    pub const HEARTBEAT_DEFAULT: Duration = Duration::from_secs(5);
    /// After how long without a heartbeat the worker is taken for dead, by default.
    pub const DEAD_AFTER_DEFAULT: Duration = Duration::from_secs(15);
    /// How long one database call of the subscriber's own may take, by default.
    pub const DB_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
    /// Events one refill scans at most, by default.
    pub const REFILL_CHUNK_DEFAULT: i32 = 10_000;

    /// A subscription to consumer `consumer` of stream `stream`, with the
    /// defaults: concurrency 16, a claim size that adapts from 100 tasks
    /// between 10 and 1,000 (and at most 64 MiB), poll interval
    /// 1 s, heartbeat 5 s, dead after 15 s, the consumer's lease, no handler
    /// timeout.
    pub fn new(stream: impl Into<String>, consumer: impl Into<String>) -> Self {
        Subscription {
            stream: stream.into(),
            consumer: consumer.into(),
            concurrency: Self::CONCURRENCY_DEFAULT,
            batch_size: Self::BATCH_SIZE_DEFAULT,
            batch_fixed: false,
            max_batch_bytes: Self::MAX_BATCH_BYTES_DEFAULT,
            poll_interval: Self::POLL_INTERVAL_DEFAULT,
            lease: None,
            heartbeat: Self::HEARTBEAT_DEFAULT,
            dead_after: Self::DEAD_AFTER_DEFAULT,
            handler_timeout: None,
            db_timeout: Self::DB_TIMEOUT_DEFAULT,
            refill_chunk: Self::REFILL_CHUNK_DEFAULT,
            prefetch: None,
            backoff: None,
            wakeups: Wakeups::Listen,
            credit: None,
            fetch_limit: None,
        }
    }

    /// How many handlers run at once (default 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Holds at most as many tasks as `credit` allows at the time (and never
    /// more than the concurrency), with no prefetch: for handlers that pass
    /// tasks on to a consumer that grants credit as it goes. See [`super::Credit`].
    pub fn credit(mut self, credit: super::Credit) -> Self {
        self.credit = Some(credit);
        self
    }

    /// Fetches only in turn with the other subscribers sharing `limit`: at
    /// most [`FetchLimit::size`](super::FetchLimit::size) of them fetch at once. For a process
    /// that starts many subscribers on one pool (see [`super::FetchLimit`]).
    pub fn fetch_limit(mut self, limit: super::FetchLimit) -> Self {
        self.fetch_limit = Some(limit);
        self
    }

    /// How many tasks one claim takes at most, fixed. At most this many
    /// claimed tasks wait in memory for a free handler (unless
    /// [`prefetch`](Self::prefetch) says otherwise).
    ///
    /// By default the claim size adapts: it starts at 100, doubles (up to
    /// 1,000) while handlers wait on fetches that come back full, and halves
    /// (down to 10) while half a claim is still waiting for handlers when
    /// the next fetch returns. Quick handlers with a backlog so get large
    /// claims (a fetch costs a few milliseconds whatever its size), and slow
    /// ones keep few tasks in memory, where other workers cannot take them.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self.batch_fixed = true;
        self
    }

    /// About how many bytes of payload one claim takes at most (default 64
    /// MiB, as Postgres stores them); a claim always takes at least one task.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self
    }

    /// How often to look for work when no notification arrives, and to run
    /// housekeeping (default 1 s). Notifications wake the subscriber at once.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The lease of the tasks this subscriber claims (default: the
    /// consumer's): how long a task stays with this worker without proof of
    /// life. While the worker's heartbeat goes on, it keeps its tasks however
    /// long their handlers run.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How often the worker reports that it is alive (default 5 s).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// After how long without a heartbeat this worker is taken for dead and
    /// its tasks are freed (default 15 s). Each worker's own limit travels
    /// with its heartbeat: it is never applied to other workers.
    pub fn dead_after(mut self, after: Duration) -> Self {
        self.dead_after = after;
        self
    }

    /// How long a handler may run (default: no limit). A handler still
    /// running after it is stopped, and the attempt fails with an error that
    /// says it timed out; the consumer's retry rules apply.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = Some(timeout);
        self
    }

    /// How long one of the subscriber's own database calls (fetch, ack
    /// flush, heartbeat, housekeeping) may take before it counts as failed
    /// and is retried (default 30 s).
    pub fn db_timeout(mut self, timeout: Duration) -> Self {
        self.db_timeout = timeout;
        self
    }

    /// How many events one refill statement scans at most (default 10,000);
    /// a larger backlog is worked through in chunks of this size.
    pub fn refill_chunk(mut self, events: i32) -> Self {
        self.refill_chunk = events;
        self
    }

    /// How many claimed tasks may wait in memory for a free handler
    /// (default: the claim size, fixed or adapting). Zero claims only for idle handlers, so
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

    /// Takes no notifications: looks for work at every poll interval, and
    /// keeps fetching while fetches bring work. For a pool behind PgBouncer
    /// in transaction pooling, where LISTEN is accepted and never hears
    /// anything, when no direct connection is at hand for
    /// [`listen_url`](Self::listen_url). Events then wait up to a poll
    /// interval: choose it accordingly (each poll is one round trip).
    pub fn poll_only(mut self) -> Self {
        self.wakeups = Wakeups::PollOnly;
        self
    }

    /// LISTENs on a connection to `url` (the same database, reached
    /// directly) instead of one made like the pool's: for a pool behind
    /// PgBouncer in transaction pooling, where LISTEN on a pooled connection
    /// never hears anything. One such connection serves every subscriber of
    /// the process with the same URL.
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        let url: String = url.into();
        self.wakeups = Wakeups::ListenAt(url.parse::<PgConnectOptions>().map(Box::new).map_err(|e| e.to_string()));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        check_name("stream", &self.stream)?;
        check_name("consumer", &self.consumer)?;
        let setting = |setting, reason: &str| Err(InvalidInput::Setting { setting, reason: reason.into() });
        if self.concurrency == 0 {
            return setting("concurrency", "at least 1 handler must be allowed to run");
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return setting("batch_size", "a batch is 1 to 10,000 tasks");
        }
        if self.max_batch_bytes < 1 {
            return setting("max_batch_bytes", "at least 1 byte");
        }
        if self.poll_interval.is_zero() {
            return setting("poll_interval", "must be more than zero");
        }
        if self.lease.is_some_and(|l| l < Duration::from_secs(1)) {
            return setting("lease", "a lease is at least 1 second");
        }
        if self.heartbeat.is_zero() {
            return setting("heartbeat", "must be more than zero");
        }
        if self.dead_after <= self.heartbeat {
            return setting("dead_after", "must be longer than the heartbeat interval");
        }
        if self.handler_timeout.is_some_and(|t| t.is_zero()) {
            return setting("handler_timeout", "must be more than zero");
        }
        if self.db_timeout < Duration::from_millis(100) {
            return setting("db_timeout", "at least 100 ms");
        }
        if self.refill_chunk < 1 {
            return setting("refill_chunk", "at least 1 event per refill");
        }
        if let Wakeups::ListenAt(Err(e)) = &self.wakeups {
            return Err(InvalidInput::Setting {
                setting: "listen_url",
                reason: format!("not a Postgres connection URL: {e}"),
            });
        }
        Ok(())
    }
}
