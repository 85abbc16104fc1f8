//! The hidden `worker` subcommand: one no-op subscriber in a process of its
//! own, for the `scale` scenario. It talks to the parent over its pipes:
//!
//! - stdout: `handled=<n>` whenever the count changed (checked every 5 ms),
//!   and on exit `exit handled=<n> peak_rss_kb=<VmHWM>`;
//! - stdin: closing it (or the parent dying) stops the worker gracefully.
//!
//! With `--expect N` it also stops by itself after handling N tasks.

use std::io::Read as _;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::sync::oneshot;
use tokio::time::{interval, MissedTickBehavior};

use crate::cli::WorkerArgs;
use crate::machine::peak_rss_kb;
use crate::work::{pool_size, shutdown, start_noop, Progress, SubConfig};

/// The first word of the progress and exit lines.
pub const HANDLED: &str = "handled=";
pub const EXIT: &str = "exit ";
pub const PEAK_RSS: &str = "peak_rss_kb=";

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    if args.pooling_transactions {
        sluice::set_pooling(sluice::Pooling::Transactions);
    }
    let options = PgConnectOptions::from_str(&args.database_url)?;
    let pool = crate::db::pool(options, pool_size(1)).await?;
    let config = SubConfig {
        concurrency: args.concurrency,
        claim_batch: args.claim_batch,
        prefetch: args.prefetch,
        poll_interval: Duration::from_millis(args.poll_interval_ms),
        defaults: args.defaults,
        poll_only: false,
    };
    let target = if args.expect == 0 { u64::MAX } else { args.expect };
    let progress = Progress::new(target, 0);
    let handles = start_noop(&pool, &config, &args.stream, &args.consumer, 1, &progress).await?;

    // Reading stdin blocks, so a thread watches for its end.
    let (closed_tx, mut closed) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });

    let mut ticks = interval(Duration::from_millis(5));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reported = 0;
    loop {
        tokio::select! {
            _ = &mut closed => break,
            _ = ticks.tick() => {
                let handled = progress.handled();
                if handled != reported {
                    println!("{HANDLED}{handled}");
                    reported = handled;
                }
                if handled >= target {
                    break;
                }
            }
        }
    }
    shutdown(handles).await;
    pool.close().await;
    println!("{EXIT}{HANDLED}{} {PEAK_RSS}{}", progress.handled(), peak_rss_kb().unwrap_or(0));
    Ok(())
}
