//! `pinned`: the drain while another session holds a transaction open.
//! Three phases, each on its own stream and consumer in the same tables:
//! before (no pin), during (a session ran `BEGIN; SELECT pg_current_xact_id()`
//! before the phase's events were published, and stays idle in that
//! transaction), after (the pin rolled back, then a VACUUM of sluice.tasks
//! and sluice.events unless `--no-vacuum`). Each phase reports its
//! throughput and the dead tuples of both tables when it ends.

use std::time::Duration;

use serde_json::json;
use sqlx::Connection as _;
use tokio::time::sleep;

use super::Ctx;
use crate::db::Bloat;
use crate::report::{count, r3, Report};
use crate::work::{drain, pool_size, publish_backlog, stream_with_consumers, Drained};

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let mut report = Report::new("pinned");
    let mut phases = serde_json::Map::new();
    let mut record = |report: &mut Report, name: &str, d: &Drained, bloat: &Bloat| {
        report.line(format!("{name:<7} {} tasks/s ({:.3} s); {}", count(d.per_s()), d.acked_s, bloat.human()));
        phases.insert(
            name.to_string(),
            json!({ "tasks_per_s": d.per_s().round(), "seconds": r3(d.acked_s), "tables": bloat }),
        );
    };

    let (before, bloat) = phase(ctx, "before").await?;
    record(&mut report, "before", &before, &bloat);

    let mut pin = ctx.db.connect().await?;
    let mut pinned = pin.begin().await?;
    let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut *pinned).await?;
    ctx.out.progress(&format!("pinned: transaction {xid} open and idle"));
    let during = phase(ctx, "during").await;
    pinned.rollback().await?;
    pin.close().await.ok();
    let (during, bloat) = during?;
    record(&mut report, "during", &during, &bloat);

    let stats = ctx.db.pool(1).await?;
    let released = Bloat::read(&stats).await?;
    report.line(format!("pin released: {}", released.human()));
    let vacuumed = if p.vacuum_after_pin {
        sqlx::raw_sql("VACUUM sluice.tasks, sluice.events").execute(&stats).await?;
        sleep(Duration::from_millis(1100)).await;
        let b = Bloat::read(&stats).await?;
        report.line(format!("VACUUM: {}", b.human()));
        Some(b)
    } else {
        None
    };
    stats.close().await;

    let (after, bloat) = phase(ctx, "after").await?;
    record(&mut report, "after", &after, &bloat);
    report.line(format!(
        "during/before {:.2}, after/before {:.2}",
        during.per_s() / before.per_s(),
        after.per_s() / before.per_s()
    ));

    report.set("n_per_phase", p.pinned_n);
    report.set("phases", phases);
    report.set("pin_released", released);
    report.set("vacuumed", vacuumed);
    report.set("during_over_before", r3(during.per_s() / before.per_s()));
    report.set("after_over_before", r3(after.per_s() / before.per_s()));
    Ok(report)
}

/// Publishes the phase's events, drains them, and reads the statistics once
/// the subscribers' sessions have ended (they report on exit).
async fn phase(ctx: &Ctx<'_>, name: &str) -> anyhow::Result<(Drained, Bloat)> {
    let p = ctx.params;
    let stream = format!("pinned_{name}");
    let pool = ctx.db.pool(pool_size(p.workers)).await?;
    stream_with_consumers(&pool, &stream, &[stream.as_str()]).await?;
    ctx.out.progress(&format!("pinned/{name}: publishing {} events (not timed), then draining", p.pinned_n));
    publish_backlog(&pool, &stream, p.pinned_n, p.batch).await?;
    let drained = drain(&pool, &p.sub_config(), &stream, &stream, p.pinned_n, p.workers, p.timeout()).await?;
    pool.close().await;
    sleep(Duration::from_millis(1100)).await;
    let stats = ctx.db.pool(1).await?;
    let bloat = Bloat::read(&stats).await?;
    stats.close().await;
    Ok((drained, bloat))
}
