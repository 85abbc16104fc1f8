//! `selective`: a drain where few events match. N events are published into
//! one stream first (not timed). One in `--selective-every` has the subject
//! `sel.match` (event n when (n + 1) is a multiple of it, so the last event
//! of the backlog matches when N is a multiple too); the others are
//! `sel.other.<n>`. One consumer includes only `sel.match`, so its refill
//! scans the whole backlog to find N / every tasks. One no-op subscriber
//! drains it, timed from its start to the moment the handlers have seen
//! every matching task (and, as in `drain`, to the last ack in the
//! database). The subscriber's event stream counts the fetch round trips
//! the drain took: every `Fetched` up to the one that claimed the last
//! matching task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use serde::de::IgnoredAny;
use serde_json::json;
use sluice::{ConsumerOptions, HandlerError, Message, NewEvent, Start, StreamOptions, SubscriberEvent};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::{timeout, Instant};

use super::Ctx;
use crate::report::{count, r3, Report};
use crate::work::{pool_size, shutdown, wait_acked, Progress};

const STREAM: &str = "selective";
const CONSUMER: &str = "selective";
/// The one subject the consumer includes.
const MATCH: &str = "sel.match";

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let (n, every) = (p.selective_n, p.selective_every);
    let matches = n / every;
    // The refill has scanned at least up to the last matching event once its
    // task is claimed: that many events, the whole backlog when every divides N.
    let scanned = matches * every;

    let pool = ctx.db.pool(pool_size(1)).await?;
    sluice::create_stream(&pool, STREAM, StreamOptions::default()).await?;
    let options = ConsumerOptions::default().include([MATCH]).start(Start::Beginning);
    sluice::create_consumer(&pool, STREAM, CONSUMER, options).await?;
    let consumer_id = crate::db::consumer_id(&pool, STREAM, CONSUMER).await?;
    ctx.out.progress(&format!("selective: publishing {} events, 1 in {every} `{MATCH}` (not timed)", count(n as f64)));
    let mut done = 0;
    while done < n {
        let k = (p.batch as u64).min(n - done);
        sluice::publish_batch(&pool, STREAM, selective_events(done, k, every)?).await?;
        done += k;
    }
    ctx.out.progress(&format!(
        "selective: 1 subscriber, concurrency {}, batch {}, draining {} matching tasks",
        p.concurrency, p.claim_batch, matches
    ));

    let progress = Progress::new(matches, 0);
    let strays = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + p.timeout();
    let handle = {
        let (progress, strays) = (progress.clone(), strays.clone());
        sluice::sub(&pool, p.sub_config().subscription(STREAM, CONSUMER), move |msg: Message<IgnoredAny>| {
            if msg.subject() != MATCH {
                strays.fetch_add(1, Ordering::Relaxed);
            }
            progress.tick();
            async { Ok::<(), HandlerError>(()) }
        })
        .await
        .context("starting the subscriber")?
    };
    // Subscribed right after sub() returns, before the driver's first fetch
    // (a database round trip) can have reported back.
    let counter = tokio::spawn(count_fetches(handle.events(), matches));
    let waited = async {
        progress.wait(deadline).await?;
        let handled_s = start.elapsed().as_secs_f64();
        wait_acked(&pool, consumer_id, deadline).await?;
        Ok::<_, anyhow::Error>((handled_s, start.elapsed().as_secs_f64()))
    }
    .await;
    shutdown(vec![handle]).await;
    let (handled_s, acked_s) = match waited {
        Ok(times) => times,
        Err(e) => {
            counter.abort();
            return Err(e.context(format!("draining consumer {CONSUMER:?} of {STREAM:?}")));
        }
    };
    // The counter stops at the fetch that claimed the last matching task, or
    // when the subscriber's event stream closes.
    let fetches = match timeout(Duration::from_secs(10), counter).await {
        Ok(joined) => joined.context("the fetch counter failed")?,
        Err(_) => bail!("the subscriber's event stream neither reached the last task nor closed"),
    };
    pool.close().await;
    let strays = strays.load(Ordering::Relaxed);
    ensure!(strays == 0, "the handlers were given {strays} tasks outside the consumer's filter");
    ensure!(
        fetches.lagged == 0,
        "{} subscriber events were dropped before they were counted: the round trips are incomplete",
        fetches.lagged
    );
    ensure!(
        fetches.claimed >= matches,
        "the subscriber reported {} claimed tasks of {matches}: the round trips are incomplete",
        fetches.claimed
    );

    let trips = fetches.round_trips.max(1) as f64;
    let tasks_per_s = matches as f64 / handled_s;
    let scanned_per_s = scanned as f64 / handled_s;
    let mut report = Report::new("selective");
    report.line(format!(
        "{} matching tasks of {} events (1 in {every}) handled in {handled_s:.3} s: {} tasks/s, {} events scanned/s (last ack at {acked_s:.3} s)",
        count(matches as f64),
        count(n as f64),
        count(tasks_per_s),
        count(scanned_per_s)
    ));
    report.line(format!(
        "{} fetch round trips: {} events scanned and {} tasks claimed per round trip; {} claimed nothing",
        fetches.round_trips,
        count(scanned as f64 / trips),
        count(fetches.claimed as f64 / trips),
        fetches.empty
    ));
    report.set("n", n);
    report.set("every", every);
    report.set("matches", matches);
    report.set("workers", 1);
    report.set("handlers_done_s", r3(handled_s));
    report.set("acked_s", r3(acked_s));
    report.set("tasks_per_s", tasks_per_s.round());
    report.set("events_scanned_per_s", scanned_per_s.round());
    report.set(
        "fetches",
        json!({ "round_trips": fetches.round_trips, "empty": fetches.empty, "claimed": fetches.claimed,
                "materialized": fetches.materialized, "events_scanned": scanned,
                "events_scanned_per_round_trip": r3(scanned as f64 / trips),
                "tasks_per_round_trip": r3(fetches.claimed as f64 / trips) }),
    );
    Ok(report)
}

/// `count` events numbered from `first`: `sel.match` for every `every`-th, `sel.other.<n>` otherwise.
fn selective_events(first: u64, count: u64, every: u64) -> anyhow::Result<Vec<NewEvent>> {
    (first..first + count)
        .map(|n| {
            let subject = if (n + 1) % every == 0 { MATCH.to_string() } else { format!("sel.other.{n}") };
            Ok(NewEvent::new(subject, &json!({ "n": n }))?)
        })
        .collect()
}

/// The subscriber's `Fetched` events, up to the one that brought the claimed
/// total to `target`.
#[derive(Debug, Default)]
struct Fetches {
    round_trips: u64,
    /// Round trips that claimed no task.
    empty: u64,
    claimed: u64,
    materialized: u64,
    /// Events the broadcast channel dropped before this receiver saw them.
    lagged: u64,
}

async fn count_fetches(mut events: broadcast::Receiver<SubscriberEvent>, target: u64) -> Fetches {
    let mut f = Fetches::default();
    while f.claimed < target {
        match events.recv().await {
            Ok(SubscriberEvent::Fetched { claimed, materialized, .. }) => {
                f.round_trips += 1;
                f.empty += u64::from(claimed == 0);
                f.claimed += claimed as u64;
                f.materialized += materialized as u64;
            }
            Ok(_) => {}
            Err(RecvError::Lagged(k)) => f.lagged += k,
            Err(RecvError::Closed) => break,
        }
    }
    f
}
