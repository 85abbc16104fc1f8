//! `fifo`: the drain of a consumer ordered by key (FIFO per key) beside an
//! unordered one on the same backlog: N keyed events (keys taken round
//! robin from `--fifo-keys` distinct keys, so each key's events are spread
//! through the backlog) published first (not timed), then drained by
//! `--workers` no-op subscribers. An ordered consumer hands out one task per
//! key at a time, so with few keys its drain is bounded by how fast one key
//! moves (a claim, an ack and a refill per task), with many by the claim.

use serde_json::json;
use sluice::{ConsumerOptions, NewEvent, Start, StreamOptions};

use super::Ctx;
use crate::report::{count, r3, Report};
use crate::work::{drain, pool_size, Drained, SUBJECT};

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let mut report = Report::new("fifo");
    let mut rows = Vec::new();
    for &keys in &p.fifo_keys {
        let mut pair = Vec::new();
        for ordered in [false, true] {
            let d = one(ctx, keys, ordered).await?;
            let label = if ordered { "ordered by key" } else { "unordered" };
            report.line(format!(
                "{} events over {} keys, {label}, {} subscriber(s): {:.3} s: {} tasks/s",
                count(p.fifo_n as f64),
                count(keys as f64),
                p.workers,
                d.acked_s,
                count(d.per_s())
            ));
            pair.push(d.per_s());
            rows.push(json!({ "keys": keys, "ordered": ordered, "n": p.fifo_n, "workers": p.workers,
                              "seconds": r3(d.acked_s), "tasks_per_s": d.per_s().round() }));
        }
        report.line(format!("  ordered / unordered with {} keys: {:.2}", count(keys as f64), pair[1] / pair[0]));
    }
    report.set("drains", json!(rows));
    Ok(report)
}

async fn one(ctx: &Ctx<'_>, keys: u64, ordered: bool) -> anyhow::Result<Drained> {
    let p = ctx.params;
    let name = format!("fifo_{keys}_{}", if ordered { "ordered" } else { "unordered" });
    let pool = ctx.db.pool(pool_size(p.workers)).await?;
    sluice::create_stream(&pool, &name, StreamOptions::default()).await?;
    let mut options = ConsumerOptions::default().start(Start::Beginning);
    if ordered {
        options = options.ordered_by_key();
    }
    sluice::create_consumer(&pool, &name, &name, options).await?;
    ctx.out.progress(&format!("fifo: publishing {} events over {keys} keys into {name} (not timed)", p.fifo_n));
    let mut done = 0;
    while done < p.fifo_n {
        let k = (p.batch as u64).min(p.fifo_n - done);
        let events = (done..done + k)
            .map(|n| Ok(NewEvent::new(SUBJECT, &json!({ "n": n }))?.key(format!("key-{}", n % keys))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        sluice::publish_batch(&pool, &name, events).await?;
        done += k;
    }
    ctx.out.progress(&format!("fifo: draining {name}"));
    let drained = drain(&pool, &p.sub_config(), &name, &name, p.fifo_n, p.workers, p.timeout()).await;
    pool.close().await;
    drained
}
