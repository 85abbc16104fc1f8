//! `sluice workers list`: the subscribers, with their status and heartbeat.

use anyhow::Result;
use clap::{Args, Subcommand};
use comfy_table::Table;
use sqlx::PgPool;

use crate::output::{self, table, Out};

#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(subcommand)]
    command: WorkersCommand,
}

#[derive(Debug, Subcommand)]
enum WorkersCommand {
    /// List the workers (subscribers): host, pid, status, heartbeat age.
    List {
        /// Only this stream's.
        stream: Option<String>,
        /// Only this consumer's.
        consumer: Option<String>,
    },
}

pub fn workers_table(workers: &[sluice::Worker]) -> Table {
    let mut t = table(["STREAM", "CONSUMER", "HOST", "PID", "STATUS", "HEARTBEAT AGE", "TASKS HELD", "DONE/MIN", "ID"]);
    for w in workers {
        t.add_row([
            w.stream.clone(),
            w.consumer.clone(),
            w.host.clone(),
            w.pid.to_string(),
            w.status.clone(),
            output::duration(std::time::Duration::from_millis(w.heartbeat_age_ms.max(0) as u64)),
            w.tasks_held.to_string(),
            w.completed_last_minute.to_string(),
            w.id.to_string(),
        ]);
    }
    t
}

pub async fn run(pool: &PgPool, out: Out, args: WorkersArgs) -> Result<()> {
    match args.command {
        WorkersCommand::List { stream, consumer } => {
            let workers = sluice::list_workers(pool, stream.as_deref(), consumer.as_deref()).await?;
            out.print(&workers, || {
                if workers.is_empty() {
                    "no workers".to_string()
                } else {
                    workers_table(&workers).to_string()
                }
            })
        }
    }
}
