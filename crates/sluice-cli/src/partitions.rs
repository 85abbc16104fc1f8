//! `sluice partitions`: how the events' table is cut into partitions, and
//! the partitions there are.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use sqlx::PgPool;

use crate::output::{self, table, Out};

#[derive(Debug, Args)]
pub struct PartitionsArgs {
    #[command(subcommand)]
    command: PartitionsCommand,
}

#[derive(Debug, Subcommand)]
enum PartitionsCommand {
    /// The partitions of the events' table, oldest first, and the settings.
    List,
    /// Change the span, the partition age or the maintenance interval; the
    /// partitions not yet written into follow at once.
    Set {
        /// Transaction ids a partition spans at most (default 1000000).
        #[arg(long, value_name = "TXIDS")]
        span: Option<i64>,
        /// How long a partition is written into at most, e.g. 1h (the
        /// default), 10m; at least 1s.
        #[arg(long, value_name = "DURATION")]
        max_age: Option<String>,
        /// How often the partitions' maintenance runs at most, e.g. 5s (the default).
        #[arg(long, value_name = "DURATION")]
        every: Option<String>,
    },
}

fn settings_json(s: &sluice::EventPartitioning) -> serde_json::Value {
    json!({
        "span": s.span,
        "max_age": output::duration(s.max_age),
        "max_age_ms": s.max_age.as_millis() as u64,
        "every": output::duration(s.every),
        "every_ms": s.every.as_millis() as u64,
    })
}

fn settings_text(s: &sluice::EventPartitioning) -> String {
    format!(
        "span         {} transaction ids\nmax age      {}\nmaintenance  every {}\n",
        s.span,
        output::duration(s.max_age),
        output::duration(s.every)
    )
}

pub async fn run(pool: &PgPool, out: Out, args: PartitionsArgs) -> Result<()> {
    match args.command {
        PartitionsCommand::List => {
            let settings = sluice::event_partitioning(pool).await?;
            let partitions = sluice::list_event_partitions(pool).await?;
            let value = json!({"settings": settings_json(&settings), "partitions": partitions});
            out.print(&value, || {
                let mut t =
                    table(["PARTITION", "FROM TXID", "TO TXID", "STATE", "CREATED", "OPENED", "SEALED", "SIZE"]);
                for p in &partitions {
                    t.add_row([
                        p.name.clone(),
                        p.from_txid.to_string(),
                        p.to_txid.to_string(),
                        p.state.name().to_string(),
                        output::time(Some(p.created_at)),
                        output::time(p.opened_at),
                        output::time(p.sealed_at),
                        format!("{} kB", p.bytes / 1024),
                    ]);
                }
                format!("{}\n{t}", settings_text(&settings))
            })
        }
        PartitionsCommand::Set { span, max_age, every } => {
            let mut change = sluice::PartitioningChange::default();
            if let Some(span) = span {
                change = change.span(span);
            }
            if let Some(age) = max_age {
                change = change.max_age(output::parse_duration("--max-age", &age)?);
            }
            if let Some(every) = every {
                change = change.every(output::parse_duration("--every", &every)?);
            }
            let settings = sluice::set_event_partitioning(pool, change).await?;
            out.print(&settings_json(&settings), || settings_text(&settings))
        }
    }
}
