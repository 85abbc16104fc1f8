//! `latency`: a steady publish rate R for D seconds, one event per publish
//! call, on a tick of 1/R. Each payload carries the time its tick fired; the
//! handler records `now - that time` when it starts, so a latency counts the
//! publish statement and its commit, the notification, the refill, the claim
//! and the hand-over to the handler. The time each publish call returned is
//! kept too, to split that into "publish call" and "after the commit".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use sluice::{HandlerError, Message, NewEvent};
use tokio::task::JoinSet;
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};

use super::Ctx;
use crate::report::{count, r3, Percentiles, Report};
use crate::work::{pool_size, shutdown, stream_with_consumers, wait_acked, Progress, SUBJECT};

#[derive(Deserialize)]
struct Stamp {
    /// Microseconds since the scenario's epoch, when the event's tick fired.
    t: u64,
}

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let total = ((p.rate as f64) * p.duration_s).round().max(1.0) as u64;
    let pool = ctx.db.pool(pool_size(p.workers)).await?;
    // Connections for the publish calls (--latency-publishers): more than one,
    // so that a slow commit does not hold back the next tick.
    let publish_pool = ctx.db.pool(p.latency_publishers).await?;
    stream_with_consumers(&pool, "latency", &["latency"]).await?;
    let consumer_id = crate::db::consumer_id(&pool, "latency", "latency").await?;

    let epoch = Instant::now();
    // (event id, tick, handler start), in µs since the epoch.
    let samples = Arc::new(Mutex::new(Vec::<(i64, u64, u64)>::with_capacity(total as usize)));
    let progress = Progress::new(total, 0);
    let mut handles = Vec::new();
    for _ in 0..p.workers {
        let (samples, progress) = (samples.clone(), progress.clone());
        let sub = p.sub_config().subscription("latency", "latency");
        handles.push(
            sluice::sub(&pool, sub, move |msg: Message<Stamp>| {
                let now = epoch.elapsed().as_micros() as u64;
                samples.lock().expect("samples poisoned").push((msg.id().0, msg.payload().t, now));
                progress.tick();
                async { Ok::<(), HandlerError>(()) }
            })
            .await?,
        );
    }
    // Let the subscribers connect and LISTEN before the clock starts.
    sleep(Duration::from_millis(300)).await;

    ctx.out.progress(&format!(
        "latency: {total} events at {}/s, one per publish call, {} publishers",
        p.rate, p.latency_publishers
    ));
    let mut ticks = interval(Duration::from_secs_f64(1.0 / p.rate as f64));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut calls = JoinSet::new();
    let start = Instant::now();
    for _ in 0..total {
        ticks.tick().await;
        let t = epoch.elapsed().as_micros() as u64;
        let publish_pool = publish_pool.clone();
        calls.spawn(async move {
            let event = NewEvent::new(SUBJECT, &json!({ "t": t }))?;
            let id = sluice::publish(&publish_pool, "latency", event).await?;
            Ok::<_, anyhow::Error>((id.0, t, epoch.elapsed().as_micros() as u64))
        });
    }
    // Event id → when its publish call returned; and how long each call took.
    let mut returned = HashMap::with_capacity(total as usize);
    let mut publish_us = Vec::with_capacity(total as usize);
    while let Some(r) = calls.join_next().await {
        let (id, tick, back) = r??;
        returned.insert(id, back);
        publish_us.push(back - tick);
    }
    let publish_s = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30).max(p.timeout());
    let waited = async {
        progress.wait(deadline).await?;
        wait_acked(&pool, consumer_id, deadline).await
    }
    .await;
    shutdown(handles).await;
    pool.close().await;
    publish_pool.close().await;
    waited?;

    let samples = samples.lock().expect("samples poisoned").clone();
    let mut lat: Vec<u64> = samples.iter().map(|(_, tick, start)| start.saturating_sub(*tick)).collect();
    // A handler may start before its publish call has returned: the commit
    // is visible (and notified) before the client hears back. Those count 0.
    let mut after_commit: Vec<u64> =
        samples.iter().filter_map(|(id, _, start)| Some(start.saturating_sub(*returned.get(id)?))).collect();
    lat.sort_unstable();
    after_commit.sort_unstable();
    publish_us.sort_unstable();
    let (l, a, c) = (Percentiles(&lat), Percentiles(&after_commit), Percentiles(&publish_us));
    let achieved = total as f64 / publish_s;
    // The ticks ran late when publishing could not keep up: then latency
    // measures the publishers' queue, and the report says so.
    let behind = achieved < 0.95 * p.rate as f64;
    let ms = |us: u64| r3(us as f64 / 1000.0);
    let mut report = Report::new("latency");
    report.line(format!(
        "{} events at {}/s for {:.1} s by {} publishers (published at {}/s): publish → handler start",
        count(total as f64),
        p.rate,
        p.duration_s,
        p.latency_publishers,
        count(achieved)
    ));
    if behind {
        report.line(format!(
            "publishing fell behind the {}/s tick (calls returned p50 {:.2} ms after their tick): the latencies below include that queue",
            p.rate,
            ms(c.at(50.0))
        ));
    }
    report.line(format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(l.at(50.0)),
        ms(l.at(90.0)),
        ms(l.at(99.0)),
        ms(l.at(100.0))
    ));
    report.line(format!(
        "of which the publish call (from its tick: waiting for a connection, statement, commit): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(c.at(50.0)),
        ms(c.at(99.0)),
        ms(c.at(100.0))
    ));
    report.line(format!(
        "and after the call returned: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        ms(a.at(50.0)),
        ms(a.at(90.0)),
        ms(a.at(99.0)),
        ms(a.at(100.0))
    ));
    report.set("n", total);
    report.set("rate", p.rate);
    report.set("duration_s", p.duration_s);
    report.set("achieved_rate", achieved.round());
    report.set("publisher_fell_behind", behind);
    report.set(
        "latency_ms",
        json!({ "p50": ms(l.at(50.0)), "p90": ms(l.at(90.0)), "p99": ms(l.at(99.0)), "max": ms(l.at(100.0)),
                "samples": lat.len() }),
    );
    report.set("publish_call_ms", json!({ "p50": ms(c.at(50.0)), "p99": ms(c.at(99.0)), "max": ms(c.at(100.0)) }));
    report.set(
        "after_publish_returned_ms",
        json!({ "p50": ms(a.at(50.0)), "p90": ms(a.at(90.0)), "p99": ms(a.at(99.0)), "max": ms(a.at(100.0)) }),
    );
    Ok(report)
}
