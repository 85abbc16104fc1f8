//! What the scenarios share: streams with consumers, untimed backlogs, no-op
//! subscribers that count what they handle, and the wait for a drained
//! consumer (the handler saw N tasks, and none is left in `sluice.tasks`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::de::IgnoredAny;
use sluice::{ConsumerOptions, HandlerError, Message, NewEvent, Start, StreamOptions, SubscriberHandle, Subscription};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::{sleep, Instant};

use crate::db;

/// The subject of every benchmark event.
pub const SUBJECT: &str = "bench.noop";

/// How often the table is polled once the handlers have seen every task
/// (what the peers do too, so batched acks count in the time).
const ACK_POLL: Duration = Duration::from_millis(5);

/// The subscriber settings of a run.
#[derive(Debug, Clone)]
pub struct SubConfig {
    pub concurrency: usize,
    pub claim_batch: usize,
    pub prefetch: usize,
    pub poll_interval: Duration,
    /// `Subscription::new` as it comes: the four settings above are ignored.
    pub defaults: bool,
    /// `Subscription::poll_only`: no LISTEN.
    pub poll_only: bool,
}

impl SubConfig {
    /// The same run with `Subscription::new`'s defaults.
    pub fn as_defaults(&self) -> SubConfig {
        SubConfig { defaults: true, ..self.clone() }
    }

    pub fn subscription(&self, stream: &str, consumer: &str) -> Subscription {
        let subscription = self.tuned(stream, consumer);
        if self.poll_only {
            subscription.poll_only()
        } else {
            subscription
        }
    }

    fn tuned(&self, stream: &str, consumer: &str) -> Subscription {
        if self.defaults {
            return Subscription::new(stream, consumer);
        }
        Subscription::new(stream, consumer)
            .concurrency(self.concurrency)
            .batch_size(self.claim_batch)
            .prefetch(self.prefetch)
            .poll_interval(self.poll_interval)
    }
}

/// A pool big enough for `subscribers` subscribers (each uses a driver, an
/// acker, a keeper and a listener connection) plus the bench's own queries.
pub fn pool_size(subscribers: usize) -> u32 {
    (subscribers * 4 + 4) as u32
}

/// `--event-retention-secs` and `--partition-span`, set once by the run.
pub static STORAGE: std::sync::OnceLock<(Option<u64>, Option<i64>)> = std::sync::OnceLock::new();

/// Creates a stream and consumers of it that start at the beginning.
pub async fn stream_with_consumers(pool: &PgPool, stream: &str, consumers: &[&str]) -> anyhow::Result<()> {
    let mut options = StreamOptions::default();
    if let Some(secs) = STORAGE.get().and_then(|s| s.0) {
        options = options.event_retention(std::time::Duration::from_secs(secs));
    }
    sluice::create_stream(pool, stream, options).await?;
    for c in consumers {
        sluice::create_consumer(pool, stream, c, ConsumerOptions::default().start(Start::Beginning)).await?;
    }
    Ok(())
}

/// `count` small events numbered from `first`.
pub fn noop_events(first: u64, count: u64) -> anyhow::Result<Vec<NewEvent>> {
    (first..first + count).map(|n| Ok(NewEvent::new(SUBJECT, &serde_json::json!({ "n": n }))?)).collect()
}

/// Publishes `n` events in batches, one publisher (not part of any timing).
pub async fn publish_backlog(pool: &PgPool, stream: &str, n: u64, batch: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let k = (batch as u64).min(n - done);
        sluice::publish_batch(pool, stream, noop_events(done, k)?).await?;
        done += k;
    }
    Ok(start.elapsed())
}

/// Counts handled tasks, wakes a waiter at a target, and (for the soak)
/// notes the time every `window` tasks, with the value of a gauge then.
pub struct Progress {
    handled: AtomicU64,
    target: AtomicU64,
    reached: Notify,
    window: u64,
    gauge: Option<Arc<AtomicU64>>,
    marks: Mutex<Vec<(Instant, u64)>>,
}

impl Progress {
    pub fn new(target: u64, window: u64) -> Arc<Progress> {
        Progress::with_gauge(target, window, None)
    }

    pub fn with_gauge(target: u64, window: u64, gauge: Option<Arc<AtomicU64>>) -> Arc<Progress> {
        Arc::new(Progress {
            handled: AtomicU64::new(0),
            target: AtomicU64::new(target),
            reached: Notify::new(),
            window,
            gauge,
            marks: Mutex::new(Vec::new()),
        })
    }

    pub fn tick(&self) {
        let k = self.handled.fetch_add(1, Ordering::Relaxed) + 1;
        if self.window > 0 && k % self.window == 0 {
            let gauge = self.gauge.as_ref().map_or(0, |g| g.load(Ordering::Relaxed));
            self.marks.lock().expect("marks poisoned").push((Instant::now(), gauge));
        }
        if k == self.target.load(Ordering::Relaxed) {
            self.reached.notify_one();
        }
    }

    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// When each window of tasks was complete (handler side), with the gauge then.
    pub fn marks(&self) -> Vec<(Instant, u64)> {
        self.marks.lock().expect("marks poisoned").clone()
    }

    /// Waits until the handlers have seen `target` tasks, or `deadline`.
    pub async fn wait(&self, deadline: Instant) -> anyhow::Result<()> {
        let target = self.target.load(Ordering::Relaxed);
        loop {
            // Checked every 50 ms too, in case the notification raced the check.
            let reached = self.reached.notified();
            if self.handled() >= target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("timed out: the handlers saw {} of {target} tasks", self.handled());
            }
            tokio::select! {
                _ = reached => {}
                _ = sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

/// Starts `workers` subscribers with a no-op handler that counts into `progress`.
pub async fn start_noop(
    pool: &PgPool,
    config: &SubConfig,
    stream: &str,
    consumer: &str,
    workers: usize,
    progress: &Arc<Progress>,
) -> anyhow::Result<Vec<SubscriberHandle>> {
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let progress = progress.clone();
        let handle = sluice::sub(pool, config.subscription(stream, consumer), move |_msg: Message<IgnoredAny>| {
            progress.tick();
            async { Ok::<(), HandlerError>(()) }
        })
        .await
        .context("starting a subscriber")?;
        handles.push(handle);
    }
    Ok(handles)
}

pub async fn shutdown(handles: Vec<SubscriberHandle>) {
    for h in handles {
        h.shutdown(Duration::from_secs(10)).await;
    }
}

/// Polls until no task of the consumer is left (every ack is in the database).
pub async fn wait_acked(pool: &PgPool, consumer_id: i32, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let left = db::remaining_tasks(pool, consumer_id).await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out with {left} tasks not acked");
        }
        sleep(ACK_POLL).await;
    }
}

/// One consumer drained: when the handlers had seen every task, and when the
/// last ack was in the database.
#[derive(Debug, Clone, Copy)]
pub struct Drained {
    pub handled_s: f64,
    pub acked_s: f64,
    pub n: u64,
}

impl Drained {
    pub fn per_s(&self) -> f64 {
        self.n as f64 / self.acked_s
    }
}

/// Drains `n` tasks of a consumer with `workers` no-op subscribers, timed
/// from the first subscriber's start to the last ack in the database.
pub async fn drain(
    pool: &PgPool,
    config: &SubConfig,
    stream: &str,
    consumer: &str,
    n: u64,
    workers: usize,
    timeout: Duration,
) -> anyhow::Result<Drained> {
    let consumer_id = db::consumer_id(pool, stream, consumer).await?;
    let progress = Progress::new(n, 0);
    let start = Instant::now();
    let deadline = start + timeout;
    let handles = start_noop(pool, config, stream, consumer, workers, &progress).await?;
    let waited = async {
        progress.wait(deadline).await?;
        let handled_s = start.elapsed().as_secs_f64();
        wait_acked(pool, consumer_id, deadline).await?;
        Ok::<_, anyhow::Error>(Drained { handled_s, acked_s: start.elapsed().as_secs_f64(), n })
    }
    .await;
    shutdown(handles).await;
    waited.with_context(|| format!("draining consumer {consumer:?} of stream {stream:?}"))
}
