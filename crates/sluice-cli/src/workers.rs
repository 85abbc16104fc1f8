//! `sluice workers list`: the subscribers, with their status and heartbeat,
//! and the gateway's clients.

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
    /// List the workers (subscribers): host, pid, status, heartbeat age; and the
    /// gateway's clients (every stream's), with their status.
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

fn clients_table(clients: &[sluice::GatewayClient]) -> Table {
    let mut t = table(["KEY", "CLIENT", "STATUS", "SUBS", "CREDIT", "IN HAND", "CONNECTED", "LAST SEEN", "GATEWAY"]);
    for c in clients {
        t.add_row([
            c.key_name.clone(),
            c.client.clone().unwrap_or_default(),
            c.status.clone(),
            c.subscriptions.to_string(),
            c.credit.to_string(),
            c.in_flight.to_string(),
            output::age(Some(c.connected_at)),
            output::age(Some(c.disconnected_at.unwrap_or(c.seen_at))),
            format!("{} {}", c.host, c.pid),
        ]);
    }
    t
}

pub async fn run(pool: &PgPool, out: Out, args: WorkersArgs) -> Result<()> {
    match args.command {
        WorkersCommand::List { stream, consumer } => {
            let workers = sluice::list_workers(pool, stream.as_deref(), consumer.as_deref()).await?;
            let clients = sluice::list_gateway_clients(pool).await?;
            let both = serde_json::json!({"workers": workers, "gateway_clients": clients});
            out.print(&both, || {
                let mut text =
                    if workers.is_empty() { "no workers".to_string() } else { workers_table(&workers).to_string() };
                if !clients.is_empty() {
                    text.push_str("\n\ngateway clients\n");
                    text.push_str(&clients_table(&clients).to_string());
                }
                text
            })
        }
    }
}
