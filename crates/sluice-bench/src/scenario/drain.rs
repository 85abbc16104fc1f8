//! `drain`: N events published first (not timed), then one consumer drained
//! by `--workers` no-op subscribers, timed from the first subscriber's start
//! to the last ack in the database. Then the fan-out variant: `--fanout`
//! consumers of one stream drained at the same time.

use futures::future::try_join_all;
use serde_json::json;

use super::Ctx;
use crate::report::{count, r3, Report};
use crate::work::{drain, pool_size, publish_backlog, stream_with_consumers, Drained, SubConfig};

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let config = p.sub_config();
    let mut report = Report::new("drain");

    // One consumer.
    let one = one_consumer(ctx, "drain", &config).await?;
    report.line(format!(
        "1 consumer, {} subscriber(s): {} tasks in {:.3} s: {} tasks/s (handlers done at {:.3} s)",
        p.workers,
        count(p.drain_n as f64),
        one.acked_s,
        count(one.per_s()),
        one.handled_s
    ));
    report.set(
        "single",
        json!({ "consumers": 1, "workers": p.workers, "n": p.drain_n, "seconds": r3(one.acked_s),
                "handlers_done_s": r3(one.handled_s), "tasks_per_s": one.per_s().round() }),
    );

    // The same drain with `Subscription::new`'s defaults, beside the setting above.
    if !p.defaults {
        let d = one_consumer(ctx, "drain_defaults", &config.as_defaults()).await?;
        let ratio = d.per_s() / one.per_s();
        report.line(format!(
            "  the same with Subscription::new's defaults: {:.3} s: {} tasks/s, {ratio:.2} of the setting above",
            d.acked_s,
            count(d.per_s())
        ));
        report.set(
            "defaults",
            json!({ "seconds": r3(d.acked_s), "tasks_per_s": d.per_s().round(), "of_tuned": (ratio * 100.0).round() / 100.0 }),
        );
    }

    // Fan-out: every consumer gets every event.
    let consumers: Vec<String> = (1..=p.fanout).map(|i| format!("fanout_{i}")).collect();
    let pool = ctx.db.pool(pool_size(p.workers * p.fanout)).await?;
    let names: Vec<&str> = consumers.iter().map(String::as_str).collect();
    stream_with_consumers(&pool, "fanout", &names).await?;
    ctx.out.progress(&format!("drain: publishing {} events for {} consumers (not timed)", p.drain_n, p.fanout));
    publish_backlog(&pool, "fanout", p.drain_n, p.batch).await?;
    let drains = consumers.iter().map(|c| drain(&pool, &config, "fanout", c, p.drain_n, p.workers, p.timeout()));
    let all = try_join_all(drains).await?;
    pool.close().await;
    let total_s = all.iter().map(|d| d.acked_s).fold(0.0, f64::max);
    let total_tasks = p.drain_n * p.fanout as u64;
    let total_per_s = total_tasks as f64 / total_s;
    report.line(format!(
        "fan-out, {} consumers × {} subscriber(s): {} tasks in {total_s:.3} s: {} tasks/s in all",
        p.fanout,
        p.workers,
        count(total_tasks as f64),
        count(total_per_s)
    ));
    let mut per_consumer = Vec::new();
    for (c, d) in consumers.iter().zip(&all) {
        report.line(format!("  {c}: {:.3} s: {} tasks/s", d.acked_s, count(d.per_s())));
        per_consumer.push(json!({ "consumer": c, "seconds": r3(d.acked_s), "tasks_per_s": d.per_s().round() }));
    }
    report.set(
        "fanout",
        json!({ "consumers": p.fanout, "workers": p.workers, "n_per_consumer": p.drain_n, "seconds": r3(total_s),
                "tasks_per_s": total_per_s.round(), "per_consumer": per_consumer }),
    );
    Ok(report)
}

/// N events published into `stream` (not timed), then its one consumer, of
/// the same name, drained with `config`.
async fn one_consumer(ctx: &Ctx<'_>, stream: &str, config: &SubConfig) -> anyhow::Result<Drained> {
    let p = ctx.params;
    let pool = ctx.db.pool(pool_size(p.workers)).await?;
    stream_with_consumers(&pool, stream, &[stream]).await?;
    ctx.out.progress(&format!("drain: publishing {} events into {stream} (not timed)", p.drain_n));
    publish_backlog(&pool, stream, p.drain_n, p.batch).await?;
    let setting = if config.defaults {
        "Subscription::new's defaults".to_string()
    } else {
        format!("concurrency {}, batch {}", config.concurrency, config.claim_batch)
    };
    ctx.out.progress(&format!("drain: {} subscriber(s), {setting}", p.workers));
    let drained = drain(&pool, config, stream, stream, p.drain_n, p.workers, p.timeout()).await;
    pool.close().await;
    drained
}
