//! `sluice stream`: create, list, show and delete streams.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use sluice::Figure;
use sqlx::PgPool;

use crate::output::{self, confirm, table, Out};
use crate::stats::figure;

#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(subcommand)]
    command: StreamCommand,
}

#[derive(Debug, Subcommand)]
enum StreamCommand {
    /// Create a stream (an existing one with the same settings is left as it is).
    Create {
        /// The stream's name: letters, digits, `_` and `-`.
        name: String,
        /// How long events are kept, e.g. 7days (the default), 12h.
        #[arg(long, value_name = "DURATION")]
        retention: Option<String>,
    },
    /// List the streams.
    List,
    /// Show a stream with its consumers.
    Show {
        /// The stream's name.
        name: String,
    },
    /// Delete a stream with its events, consumers and tasks.
    Delete {
        /// The stream's name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

pub fn stream_json(s: &sluice::Stream) -> serde_json::Value {
    json!({
        "name": s.name,
        "event_retention": output::duration(s.event_retention),
        "event_retention_ms": s.event_retention.as_millis() as u64,
        "created_at": s.created_at,
    })
}

pub async fn run(pool: &PgPool, out: Out, args: StreamArgs) -> Result<()> {
    match args.command {
        StreamCommand::Create { name, retention } => {
            let mut options = sluice::StreamOptions::default();
            if let Some(r) = retention {
                options = options.event_retention(output::parse_duration("--retention", &r)?);
            }
            let s = sluice::create_stream(pool, &name, options).await?;
            out.print(&stream_json(&s), || {
                format!("stream {} (events kept {})", s.name, output::duration(s.event_retention))
            })
        }
        StreamCommand::List => {
            let streams = sluice::list_streams(pool).await?;
            let rows: Vec<_> = streams.iter().map(stream_json).collect();
            out.print(&rows, || {
                let mut t = table(["STREAM", "EVENT RETENTION", "CREATED"]);
                for s in &streams {
                    t.add_row([s.name.clone(), output::duration(s.event_retention), output::time(Some(s.created_at))]);
                }
                t.to_string()
            })
        }
        StreamCommand::Show { name } => {
            let s = sluice::get_stream(pool, &name).await?;
            let stats = sluice::queue_stats(pool, Some(&name), None).await?;
            let consumers: Vec<_> = stats
                .consumers
                .iter()
                .map(|c| {
                    json!({"name": c.consumer, "paused": c.paused, "lag_events": c.lag_events,
                                "available": c.available, "running": c.running, "discarded": c.discarded})
                })
                .collect();
            let events = stats.consumers.first().map(|c| c.events);
            let events_shown = stats.consumers.first().map(|c| figure(c, Figure::Events));
            let mut value = stream_json(&s);
            value["events"] = json!(events);
            value["consumers"] = json!(consumers);
            out.print(&value, || {
                let mut text = format!(
                    "stream       {}\nretention    {}\ncreated      {}\n",
                    s.name,
                    output::duration(s.event_retention),
                    output::time(Some(s.created_at))
                );
                if let Some(events) = &events_shown {
                    text.push_str(&format!("events       {events}\n"));
                }
                if stats.consumers.is_empty() {
                    text.push_str("consumers    none\n");
                } else {
                    let mut t = table(["CONSUMER", "PAUSED", "LAG", "AVAILABLE", "RUNNING", "DEAD"]);
                    for c in &stats.consumers {
                        t.add_row([
                            c.consumer.clone(),
                            if c.paused { "yes" } else { "no" }.to_string(),
                            figure(c, Figure::LagEvents),
                            figure(c, Figure::Available),
                            figure(c, Figure::Running),
                            figure(c, Figure::Discarded),
                        ]);
                    }
                    text.push('\n');
                    text.push_str(&t.to_string());
                }
                text
            })
        }
        StreamCommand::Delete { name, yes } => {
            sluice::get_stream(pool, &name).await?;
            let consumers = sluice::list_consumers(pool, Some(&name)).await?;
            confirm(
                yes,
                &format!(
                    "Delete stream {name:?} with all its events, its {} consumer(s) and their tasks?",
                    consumers.len()
                ),
            )?;
            sluice::delete_stream(pool, &name).await?;
            out.print(&json!({"deleted": name}), || format!("deleted stream {name}"))
        }
    }
}
