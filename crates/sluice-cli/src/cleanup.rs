//! `sluice cleanup`: the subscribers' housekeeping, by hand.

use anyhow::Result;
use clap::Args;
use sqlx::PgPool;

use crate::output::{table, Out};

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Show what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(pool: &PgPool, out: Out, args: CleanupArgs) -> Result<()> {
    let report = sluice::cleanup(pool, args.dry_run).await?;
    out.print(&report, || {
        let mut t = table(["STREAM", "CONSUMER", "DUE", "LOST LEASES", "DEAD WORKERS", "EXPIRED TASKS", "EXPIRED LOG"]);
        for c in &report.consumers {
            t.add_row([
                c.stream.clone(),
                c.consumer.clone(),
                c.due.to_string(),
                c.lost.to_string(),
                c.dead_workers.to_string(),
                c.expired_tasks.to_string(),
                c.expired_log.to_string(),
            ]);
        }
        let verb = if report.dry_run { "would drop" } else { "dropped" };
        let head = if report.dry_run { "dry run: nothing was changed\n" } else { "" };
        format!("{head}{t}\nevent partitions {verb}: {}", report.event_partitions_dropped)
    })
}
