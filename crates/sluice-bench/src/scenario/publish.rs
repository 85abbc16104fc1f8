//! `publish`: N events in batches of `--batch`, by 1 and more concurrent
//! publishers (each on its own connection), events/s. Building the events
//! (serializing the payloads) is part of the time, as it is for a user.

use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Ctx;
use crate::report::{count, r3, Report};
use crate::work::{noop_events, stream_with_consumers};

pub async fn run(ctx: &Ctx<'_>) -> anyhow::Result<Report> {
    let p = ctx.params;
    let mut report = Report::new("publish");
    let mut runs = Vec::new();
    for &publishers in &p.publishers {
        let stream = format!("publish_{publishers}");
        let pool = ctx.db.pool(publishers as u32 + 1).await?;
        stream_with_consumers(&pool, &stream, &[]).await?;
        ctx.out.progress(&format!("publish: {} events, {publishers} publisher(s)", p.publish_n));
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for i in 0..publishers as u64 {
            // Publisher i publishes its share of the N events, batch after batch.
            let share = p.publish_n / publishers as u64 + u64::from(i < p.publish_n % publishers as u64);
            let (pool, stream, batch) = (pool.clone(), stream.clone(), p.batch as u64);
            tasks.spawn(async move {
                let mut done = 0;
                while done < share {
                    let k = batch.min(share - done);
                    sluice::publish_batch(&pool, &stream, noop_events(i * share + done, k)?).await?;
                    done += k;
                }
                Ok::<_, anyhow::Error>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let secs = start.elapsed().as_secs_f64();
        pool.close().await;
        let per_s = p.publish_n as f64 / secs;
        report.line(format!(
            "{publishers} publisher(s): {} events in batches of {} in {secs:.3} s: {} events/s",
            count(p.publish_n as f64),
            p.batch,
            count(per_s)
        ));
        runs.push(json!({ "publishers": publishers, "n": p.publish_n, "batch": p.batch,
                          "seconds": r3(secs), "events_per_s": per_s.round() }));
    }
    report.set("runs", runs);
    Ok(report)
}
