//! `pressure`: a steady publish rate drained by one consumer, measured while
//! the database is put under pressure and while it recovers.
//!
//! First the drain rate: `--pressure-calibrate-n` events are published
//! (not timed) into a stream of their own and drained by the subscribers,
//! as in `drain`. The normal publish rate is `--pressure-rate`, or 25 % of
//! that drain rate. Then a publisher sends events at the normal rate (every
//! 20 ms, in calls of at most `--batch` events, up to 4 calls at once; a
//! publisher that falls behind does not catch up later) while the subscribers
//! drain, through five phases:
//!
//! - `clean`: nothing else. Its throughput is the reference. The 99th
//!   percentile of its backlog (published − handled, sampled every 5 ms), or
//!   what the normal rate publishes in `CAUGHT_UP` if that is more, is the
//!   backlog that is normally in flight: "back to 0" below means back to that
//!   level, the consumer less than a second behind.
//! - `pin`: a session ran `BEGIN; SELECT pg_current_xact_id()` and stays idle
//!   in that transaction, holding the xmin horizon, for the whole phase.
//! - `overload`: the publish rate is 1.5× the drain rate.
//! - `readers`: 4 sessions ran `BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT
//!   count(*) FROM public.pressure_readers` (a small table of the bench's own)
//!   and keep reading it, twice a second, in that transaction.
//! - `burst`: the publish rate is `--pressure-burst-factor` × the normal rate.
//!
//! After each pressure phase the pressure is lifted, the normal rate goes
//! on, and the bench times how long the backlog takes to come back to its
//! clean level; it gives up after `--pressure-recovery-secs`, says so, and
//! then pauses the publisher until the backlog is empty so that the next
//! phase starts clean. Every phase reports its throughput (against the clean
//! phase and the drain rate), the backlog at its end, the recovery and
//! `sluice::storage_stats` for `tasks` and `events`. At the end the publisher
//! stops and the bench waits for every task: each published event must have
//! been handled (tracked by event number, so a task handled twice does not
//! hide a lost one) and no task may be left, or the scenario fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice::{HandlerError, Message, SubscriberHandle};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};

use super::Ctx;
use crate::db::{self, Storage};
use crate::report::{count, r3, Percentiles, Report};
use crate::work::{drain, noop_events, pool_size, publish_backlog, shutdown, stream_with_consumers, wait_acked};

const STREAM: &str = "pressure";
/// The stream whose backlog measures the drain rate at the start.
const CALIBRATE: &str = "pressure_calibrate";
/// The readers' table: not one of Sluice's.
const READERS_TABLE: &str = "public.pressure_readers";
const READ: &str = "SELECT count(*) FROM public.pressure_readers";
const READERS: usize = 4;
/// How often each reader reads its table again.
const READ_EVERY: Duration = Duration::from_millis(500);
/// Publish calls in flight at once (and the publisher's pool).
const PUBLISH_CONNECTIONS: usize = 4;
/// The publisher's tick: each sends what the rate owes since the last one.
const TICK: Duration = Duration::from_millis(20);
/// How often the backlog is sampled.
const SAMPLE: Duration = Duration::from_millis(5);
/// The normal rate without `--pressure-rate`, as a share of the drain rate.
const NORMAL_SHARE: f64 = 0.25;
const OVERLOAD_FACTOR: f64 = 1.5;
/// A backlog of what the normal rate publishes in this long counts as caught
/// up: after a pressure phase the tables are larger and autovacuum works
/// through them, each round trip takes longer and more is in flight than in
/// the clean phase, though nothing is waiting.
const CAUGHT_UP: Duration = Duration::from_secs(1);
/// Before the clean phase: the publisher and the subscribers settle in.
const WARM_UP: Duration = Duration::from_millis(500);
/// At the end: no event handled for this long while some are missing fails the run.
const STALL: Duration = Duration::from_secs(30);
/// The targets, printed beside the figures (not enforced).
const TARGET_RATIO: f64 = 0.9;
const TARGET_RECOVERY_S: f64 = 60.0;

#[derive(Deserialize)]
struct Numbered {
    n: u64,
}

/// Which event numbers the handlers have seen, and how many handler calls.
#[derive(Default)]
struct Seen {
    bits: Mutex<Vec<u64>>,
    unique: AtomicU64,
    calls: AtomicU64,
}

impl Seen {
    fn mark(&self, n: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        let mut bits = self.bits.lock().expect("seen poisoned");
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & bit == 0 {
            bits[word] |= bit;
            self.unique.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The publisher's controls and counts.
struct Flow {
    /// Events per second; 0 pauses the publisher.
    rate: AtomicU64,
    stop: AtomicBool,
    /// Event numbers handed out.
    next: AtomicU64,
    /// Events in committed publish calls.
    published: AtomicU64,
}

struct Counters {
    flow: Arc<Flow>,
    seen: Arc<Seen>,
}

impl Counters {
    fn published(&self) -> u64 {
        self.flow.published.load(Ordering::Relaxed)
    }

    /// Distinct events handled.
    fn handled(&self) -> u64 {
        self.seen.unique.load(Ordering::Relaxed)
    }

    /// Published, not yet handled. A handler may see an event before its
    /// publish call has returned, hence the saturation.
    fn backlog(&self) -> u64 {
        self.published().saturating_sub(self.handled())
    }

    fn set_rate(&self, rate: u64) {
        self.flow.rate.store(rate, Ordering::Relaxed);
    }
}

/// Publishes at `flow.rate` until `flow.stop`.
async fn publish_loop(pool: PgPool, flow: Arc<Flow>, batch: u64) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(PUBLISH_CONNECTIONS));
    let mut calls = JoinSet::new();
    let mut ticks = interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut owed = 0.0f64;
    while !flow.stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        while let Some(done) = calls.try_join_next() {
            done??;
        }
        let now = Instant::now();
        let rate = flow.rate.load(Ordering::Relaxed) as f64;
        // What the publisher could not send within about two ticks is
        // dropped: it does not catch up later, so a rate change is a step.
        let cap = rate * 2.0 * TICK.as_secs_f64() + batch as f64;
        owed = if rate == 0.0 { 0.0 } else { (owed + rate * (now - last).as_secs_f64()).min(cap) };
        last = now;
        while owed >= 1.0 {
            let Ok(permit) = permits.clone().try_acquire_owned() else { break };
            let k = (owed as u64).min(batch);
            owed -= k as f64;
            let first = flow.next.fetch_add(k, Ordering::Relaxed);
            let (pool, flow) = (pool.clone(), flow.clone());
            calls.spawn(async move {
                let _permit = permit;
                sluice::publish_batch(&pool, STREAM, noop_events(first, k)?).await?;
                flow.published.fetch_add(k, Ordering::Relaxed);
                Ok::<(), anyhow::Error>(())
            });
        }
    }
    while let Some(done) = calls.join_next().await {
        done??;
    }
    Ok(())
}

/// One phase's span: its length, what went through, the backlog samples.
struct Held {
    secs: f64,
    published: u64,
    handled: u64,
    samples: Vec<u64>,
    backlog_at_end: u64,
}

impl Held {
    fn tasks_per_s(&self) -> f64 {
        self.handled as f64 / self.secs
    }

    fn published_per_s(&self) -> f64 {
        self.published as f64 / self.secs
    }

    fn max_backlog(&self) -> u64 {
        self.samples.iter().copied().max().unwrap_or(0).max(self.backlog_at_end)
    }
}

/// Lets the publisher and the subscribers run for `secs`, sampling the backlog.
async fn hold(c: &Counters, secs: f64) -> Held {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let (published, handled) = (c.published(), c.handled());
    let mut samples = Vec::with_capacity((secs / SAMPLE.as_secs_f64()) as usize + 1);
    loop {
        samples.push(c.backlog());
        let now = Instant::now();
        if now >= end {
            break;
        }
        sleep(SAMPLE.min(end - now)).await;
    }
    Held {
        secs: start.elapsed().as_secs_f64(),
        published: c.published() - published,
        handled: c.handled() - handled,
        backlog_at_end: c.backlog(),
        samples,
    }
}

/// Seconds until the backlog is back at `steady` or below, or `None` after `limit`.
async fn recover(c: &Counters, steady: u64, limit: Duration) -> Option<f64> {
    let start = Instant::now();
    loop {
        if c.backlog() <= steady {
            return Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() >= limit {
            return None;
        }
        sleep(SAMPLE).await;
    }
}

/// Pauses the publisher until the backlog is empty, then resumes at `rate`.
async fn settle(c: &Counters, rate: u64, limit: Duration) -> anyhow::Result<f64> {
    c.set_rate(0);
    let start = Instant::now();
    while c.backlog() > 0 {
        if start.elapsed() >= limit {
            bail!(
                "the backlog did not drain within {} s with the publisher paused: {} left",
                limit.as_secs(),
                c.backlog()
            );
        }
        sleep(SAMPLE).await;
    }
    c.set_rate(rate);
    Ok(start.elapsed().as_secs_f64())
}

fn check_subscribers(handles: &[SubscriberHandle]) -> anyhow::Result<()> {
    if let Some(h) = handles.iter().find(|h| h.is_finished()) {
        match h.error() {
            Some(e) => bail!("a subscriber stopped: {e}"),
            None => bail!("a subscriber stopped"),
        }
    }
    Ok(())
}

/// A REPEATABLE READ reader of the bench's own table, its snapshot taken.
async fn open_reader(ctx: &Ctx<'_>) -> anyhow::Result<PgConnection> {
    let mut conn = ctx.db.connect().await?;
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ").execute(&mut conn).await?;
    let _: i64 = sqlx::query_scalar(READ).fetch_one(&mut conn).await?;
    Ok(conn)
}

/// Keeps reading in the open transaction until `until`; returns the reads.
async fn keep_reading(conn: &mut PgConnection, until: Instant) -> anyhow::Result<u64> {
    let mut reads = 0;
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(reads);
        }
        sleep(READ_EVERY.min(until - now)).await;
        if Instant::now() >= until {
            return Ok(reads);
        }
        let _: i64 = sqlx::query_scalar(READ).fetch_one(&mut *conn).await?;
        reads += 1;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pin,
    Overload,
    Readers,
    Burst,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pin => "pin",
            Kind::Overload => "overload",
            Kind::Readers => "readers",
            Kind::Burst => "burst",
        }
    }
}

/// One phase's figures, as reported.
#[derive(Serialize)]
struct Phase {
    seconds: f64,
    publish_rate: u64,
    published_per_s: f64,
    tasks_per_s: f64,
    over_clean: f64,
    over_drain_rate: f64,
    backlog_at_end: u64,
    max_backlog: u64,
    tables_at_end: Storage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pressure: Option<serde_json::Value>,
    /// Seconds from the release to the backlog back at its clean level; `None`: given up.
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery: Option<Recovery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Target>,
}

#[derive(Serialize)]
struct Recovery {
    recovered: bool,
    seconds: Option<f64>,
    gave_up_after_s: f64,
    /// The backlog over the spare drain rate (drain rate − normal rate): what
    /// the recovery would take if the subscribers drained at the calibrated rate.
    estimate_s: Option<f64>,
    /// Given up: seconds with the publisher paused until the backlog was empty.
    settle_s: Option<f64>,
    tables_after: Storage,
}

#[derive(Serialize)]
struct Target {
    what: String,
    measured: String,
    met: bool,
}

struct Rates {
    drain: f64,
    normal: u64,
    overload: u64,
    burst: u64,
}

fn phase_figures(held: &Held, rate: u64, clean_tps: f64, drain: f64, tables: Storage) -> Phase {
    let tps = held.tasks_per_s();
    Phase {
        seconds: r3(held.secs),
        publish_rate: rate,
        published_per_s: held.published_per_s().round(),
        tasks_per_s: tps.round(),
        over_clean: if clean_tps > 0.0 { r3(tps / clean_tps) } else { 0.0 },
        over_drain_rate: r3(tps / drain),
        backlog_at_end: held.backlog_at_end,
        max_backlog: held.max_backlog(),
        tables_at_end: tables,
        pressure: None,
        recovery: None,
        target: None,
    }
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let pr = &p.pressure;
    let pool = ctx.db.pool(pool_size(p.workers)).await?;
    let publish_pool = ctx.db.pool(PUBLISH_CONNECTIONS as u32).await?;
    stream_with_consumers(&pool, CALIBRATE, &[CALIBRATE]).await?;
    stream_with_consumers(&pool, STREAM, &[STREAM]).await?;
    let consumer_id = db::consumer_id(&pool, STREAM, STREAM).await?;
    sqlx::raw_sql(&format!(
        "CREATE TABLE {READERS_TABLE} (id int PRIMARY KEY, note text NOT NULL); \
         INSERT INTO {READERS_TABLE} SELECT g, 'row ' || g FROM generate_series(1, 1000) g"
    ))
    .execute(&pool)
    .await
    .context("creating the readers' table")?;

    // The drain rate, on a stream of its own.
    ctx.out.progress(&format!(
        "pressure: measuring the drain rate: {} events published (not timed), then drained",
        count(pr.calibrate_n as f64)
    ));
    publish_backlog(&pool, CALIBRATE, pr.calibrate_n, p.batch).await?;
    let calibrated =
        drain(&pool, &p.sub_config(), CALIBRATE, CALIBRATE, pr.calibrate_n, p.workers, p.timeout()).await?;
    let drain_rate = calibrated.per_s();
    let normal = pr.rate.unwrap_or_else(|| (drain_rate * NORMAL_SHARE).round().max(1.0) as u64);
    let rates = Rates {
        drain: drain_rate,
        normal,
        overload: (drain_rate * OVERLOAD_FACTOR).round().max(1.0) as u64,
        burst: (normal as f64 * pr.burst_factor).round().max(1.0) as u64,
    };
    ctx.out.progress(&format!(
        "pressure: drain rate {} tasks/s; publishing at {}/s (overload {}/s, burst {}/s)",
        count(rates.drain),
        count(rates.normal as f64),
        count(rates.overload as f64),
        count(rates.burst as f64)
    ));
    let tables_at_start = Storage::read(&pool).await?;

    // The subscribers, then the publisher.
    let seen = Arc::new(Seen::default());
    let mut handles = Vec::with_capacity(p.workers);
    for _ in 0..p.workers {
        let seen = seen.clone();
        let sub = p.sub_config().subscription(STREAM, STREAM);
        let handle = sluice::sub(&pool, sub, move |msg: Message<Numbered>| {
            seen.mark(msg.payload().n);
            async { Ok::<(), HandlerError>(()) }
        })
        .await
        .context("starting a subscriber")?;
        handles.push(handle);
    }
    // Let the subscribers connect and LISTEN before the first event.
    sleep(Duration::from_millis(300)).await;
    let flow = Arc::new(Flow {
        rate: AtomicU64::new(rates.normal),
        stop: AtomicBool::new(false),
        next: AtomicU64::new(0),
        published: AtomicU64::new(0),
    });
    let publisher = tokio::spawn(publish_loop(publish_pool.clone(), flow.clone(), p.batch as u64));
    let c = Counters { flow: flow.clone(), seen: seen.clone() };

    let phases = phases(ctx, &pool, &c, &handles, &rates).await;
    flow.stop.store(true, Ordering::Relaxed);
    let (steady, phases) = match phases {
        Ok(phases) => phases,
        Err(e) => {
            publisher.abort();
            shutdown(handles).await;
            return Err(e);
        }
    };

    // Nothing lost: every published event handled, no task left.
    let published = publisher.await.context("the publisher panicked")?;
    let end = Instant::now();
    let deadline = end + p.timeout();
    let drained = async {
        published?;
        let (mut last, mut moved) = (c.handled(), Instant::now());
        while c.handled() < c.published() {
            check_subscribers(&handles)?;
            if c.handled() != last {
                (last, moved) = (c.handled(), Instant::now());
            }
            if Instant::now() >= deadline || moved.elapsed() >= STALL {
                bail!("lost or stuck: {} of {} published events handled", c.handled(), c.published());
            }
            sleep(SAMPLE).await;
        }
        wait_acked(&pool, consumer_id, deadline).await
    }
    .await;
    let final_drain_s = end.elapsed().as_secs_f64();
    shutdown(handles).await;
    drained.context("draining the last events")?;
    let tables_at_end = Storage::read(&pool).await?;
    pool.close().await;
    publish_pool.close().await;
    let (published, handled) = (c.published(), c.handled());
    let calls = seen.calls.load(Ordering::Relaxed);
    ensure!(handled == published, "lost: {published} events published, {handled} handled");

    Ok(report(Summary {
        calibrate_n: pr.calibrate_n,
        calibrated_s: calibrated.acked_s,
        rates,
        rate_given: pr.rate.is_some(),
        steady,
        phases,
        tables_at_start,
        tables_at_end,
        published,
        redelivered: calls - handled,
        final_drain_s,
    }))
}

/// The clean phase, then each pressure phase with its recovery. Returns the
/// steady backlog and the phases in order.
async fn phases(
    ctx: &Ctx<'_>,
    pool: &PgPool,
    c: &Counters,
    handles: &[SubscriberHandle],
    rates: &Rates,
) -> anyhow::Result<(u64, Vec<(&'static str, Phase)>)> {
    let pr = &ctx.params.pressure;
    sleep(WARM_UP).await;
    ctx.out.progress(&format!("pressure/clean: {} s at {}/s", pr.clean_s, count(rates.normal as f64)));
    let clean = hold(c, pr.clean_s).await;
    check_subscribers(handles)?;
    let tables = Storage::read(pool).await?;
    let clean_tps = clean.tasks_per_s();
    let mut sorted = clean.samples.clone();
    sorted.sort_unstable();
    let steady = Percentiles(&sorted).at(99.0).max((rates.normal as f64 * CAUGHT_UP.as_secs_f64()) as u64);
    let clean = phase_figures(&clean, rates.normal, clean_tps, rates.drain, tables);
    ctx.out.progress(&format!("pressure/{}", phase_row("clean", &clean)));
    let mut out = vec![("clean", clean)];

    for (kind, secs) in [
        (Kind::Pin, pr.pin_s),
        (Kind::Overload, pr.overload_s),
        (Kind::Readers, pr.readers_s),
        (Kind::Burst, pr.burst_s),
    ] {
        let name = kind.name();
        let rate = match kind {
            Kind::Overload => rates.overload,
            Kind::Burst => rates.burst,
            Kind::Pin | Kind::Readers => rates.normal,
        };
        ctx.out.progress(&format!("pressure/{name}: {secs} s, publishing at {}/s", count(rate as f64)));
        // Apply the pressure, hold the phase, read the tables, lift it.
        let (held, tables, detail) = match kind {
            Kind::Pin => {
                let mut pin = ctx.db.connect().await?;
                sqlx::raw_sql("BEGIN").execute(&mut pin).await?;
                let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut pin).await?;
                let held = hold(c, secs).await;
                let tables = Storage::read(pool).await?;
                sqlx::raw_sql("ROLLBACK").execute(&mut pin).await?;
                pin.close().await.ok();
                (held, tables, json!({ "pinning_xid": xid }))
            }
            Kind::Readers => {
                let mut readers = Vec::with_capacity(READERS);
                for _ in 0..READERS {
                    readers.push(open_reader(ctx).await?);
                }
                let until = Instant::now() + Duration::from_secs_f64(secs);
                let reading = try_join_all(readers.iter_mut().map(|conn| keep_reading(conn, until)));
                let (held, reads) = tokio::join!(hold(c, secs), reading);
                let tables = Storage::read(pool).await?;
                for mut conn in readers {
                    sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
                    conn.close().await.ok();
                }
                // Each reader's first read opened its snapshot, before the phase.
                let reads: u64 = reads?.iter().map(|r| r + 1).sum();
                (held, tables, json!({ "readers": READERS, "reads": reads, "table": READERS_TABLE }))
            }
            Kind::Overload | Kind::Burst => {
                c.set_rate(rate);
                let held = hold(c, secs).await;
                c.set_rate(rates.normal);
                let tables = Storage::read(pool).await?;
                (held, tables, json!({ "factor_of_drain_rate": r3(rate as f64 / rates.drain) }))
            }
        };
        check_subscribers(handles)?;
        let mut phase = phase_figures(&held, rate, clean_tps, rates.drain, tables);
        phase.pressure = Some(detail);

        let limit = Duration::from_secs_f64(pr.recovery_s);
        let recovered = recover(c, steady, limit).await;
        let tables_after = Storage::read(pool).await?;
        let settle_s = match recovered {
            Some(_) => None,
            None => {
                ctx.out.progress(&format!(
                    "pressure/{name}: backlog {} after {} s; publisher paused until it drains",
                    count(c.backlog() as f64),
                    pr.recovery_s
                ));
                Some(r3(settle(c, rates.normal, ctx.params.timeout()).await?))
            }
        };
        let spare = rates.drain - rates.normal as f64;
        phase.recovery = Some(Recovery {
            recovered: recovered.is_some(),
            seconds: recovered.map(r3),
            gave_up_after_s: pr.recovery_s,
            estimate_s: (spare > 0.0).then(|| r3(held.backlog_at_end as f64 / spare)),
            settle_s,
            tables_after,
        });
        phase.target = Some(match kind {
            Kind::Pin | Kind::Readers => Target {
                what: format!("handled ≥ {TARGET_RATIO}× clean"),
                measured: format!("{:.2}×", phase.over_clean),
                met: phase.over_clean >= TARGET_RATIO,
            },
            Kind::Overload | Kind::Burst => Target {
                what: format!("backlog back to 0 within {TARGET_RECOVERY_S} s"),
                measured: recovered.map_or_else(|| format!("> {} s", pr.recovery_s), |x| format!("{x:.2} s")),
                met: recovered.is_some_and(|s| s <= TARGET_RECOVERY_S),
            },
        });
        ctx.out.progress(&format!("pressure/{}; {}", phase_row(name, &phase), phase.tables_at_end.human()));
        out.push((name, phase));
    }
    Ok((steady, out))
}

struct Summary {
    calibrate_n: u64,
    calibrated_s: f64,
    rates: Rates,
    rate_given: bool,
    steady: u64,
    phases: Vec<(&'static str, Phase)>,
    tables_at_start: Storage,
    tables_at_end: Storage,
    published: u64,
    redelivered: u64,
    final_drain_s: f64,
}

/// One phase's line of the table: also printed as the phase ends.
fn phase_row(name: &str, ph: &Phase) -> String {
    let recovery = match &ph.recovery {
        None => String::new(),
        Some(rec) => {
            let estimate = rec.estimate_s.map_or(String::new(), |e| format!(" (estimate {e:.2} s)"));
            match (rec.seconds, rec.settle_s) {
                (Some(secs), _) => format!("{secs:.2} s{estimate}"),
                (None, settle) => format!(
                    "gave up after {} s{estimate}; drained in {:.2} s more, publisher paused",
                    rec.gave_up_after_s,
                    settle.unwrap_or(0.0)
                ),
            }
        }
    };
    format!(
        "{:<9} {:>6.1} {:>20} {:>10} {:>7.2} {:>7.2} {:>10}  {}",
        name,
        ph.seconds,
        format!("{} ({})", count(ph.published_per_s), count(ph.publish_rate as f64)),
        count(ph.tasks_per_s),
        ph.over_clean,
        ph.over_drain_rate,
        count(ph.backlog_at_end as f64),
        recovery
    )
}

fn report(s: Summary) -> Report {
    let r = &s.rates;
    let mut report = Report::new("pressure");
    report.line(format!(
        "drain rate {} tasks/s ({} tasks drained in {:.3} s before the phases)",
        count(r.drain),
        count(s.calibrate_n as f64),
        s.calibrated_s
    ));
    report.line(format!(
        "normal publish rate {}/s ({}); overload {}/s ({OVERLOAD_FACTOR}× the drain rate), burst {}/s ({}× the drain rate)",
        count(r.normal as f64),
        if s.rate_given {
            format!("--pressure-rate, {:.0} % of the drain rate", 100.0 * r.normal as f64 / r.drain)
        } else {
            format!("{:.0} % of the drain rate", 100.0 * NORMAL_SHARE)
        },
        count(r.overload as f64),
        count(r.burst as f64),
        r3(r.burst as f64 / r.drain)
    ));
    if r.normal as f64 >= r.drain {
        report.line("the normal rate is at or above the drain rate: no backlog can drain while it runs");
    }
    report.line(format!(
        "backlog normally in flight (p99 of the clean phase's, sampled every {} ms, or {} s of the normal rate if more): {} tasks; \"back to 0\" means back to it",
        SAMPLE.as_millis(),
        CAUGHT_UP.as_secs(),
        count(s.steady as f64)
    ));
    report.line(format!(
        "{:<9} {:>6} {:>20} {:>10} {:>7} {:>7} {:>10}  {}",
        "phase",
        "secs",
        "published/s (target)",
        "handled/s",
        "×clean",
        "×drain",
        "backlog",
        "recovery at the normal rate"
    ));
    for (name, ph) in &s.phases {
        report.line(phase_row(name, ph));
    }
    report.line("storage_stats (the server's statistics lag a little):");
    report.line(format!("  {:<9} {}", "start", s.tables_at_start.human()));
    for (name, ph) in &s.phases {
        report.line(format!("  {:<9} end of phase: {}", name, ph.tables_at_end.human()));
        if let Some(rec) = &ph.recovery {
            report.line(format!("  {:<9} recovered:    {}", "", rec.tables_after.human()));
        }
    }
    report.line(format!("  {:<9} {}", "end", s.tables_at_end.human()));
    let targets: Vec<String> = s
        .phases
        .iter()
        .filter_map(|(name, ph)| {
            let t = ph.target.as_ref()?;
            Some(format!("{name}: {} — {}, {}", t.what, t.measured, if t.met { "met" } else { "missed" }))
        })
        .collect();
    report.line(format!("targets (reported, not enforced): {}", targets.join("; ")));
    report.line(format!(
        "nothing lost: {} published, {} handled ({} handed out more than once), no task left ({:.2} s to drain after the last phase)",
        count(s.published as f64),
        count(s.published as f64),
        count(s.redelivered as f64),
        s.final_drain_s
    ));

    let phases: serde_json::Map<String, serde_json::Value> = s
        .phases
        .iter()
        .map(|(name, ph)| (name.to_string(), serde_json::to_value(ph).expect("phase serializes")))
        .collect();
    report.set("drain_rate", r.drain.round());
    report.set("calibrate_n", s.calibrate_n);
    report.set("normal_rate", r.normal);
    report.set("normal_rate_from", if s.rate_given { "--pressure-rate" } else { "25% of the drain rate" });
    report.set("overload_rate", r.overload);
    report.set("burst_rate", r.burst);
    report.set("steady_backlog", s.steady);
    report.set("phases", phases);
    report.set("tables_at_start", &s.tables_at_start);
    report.set("tables_at_end", &s.tables_at_end);
    report.set("published", s.published);
    report.set("handled", s.published);
    report.set("redelivered", s.redelivered);
    report.set("lost", 0);
    report.set("final_drain_s", r3(s.final_drain_s));
    report
}
