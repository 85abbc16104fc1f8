//! `sluice consumer`: create, list, show, pause, resume, reset and delete consumers.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use sluice::Figure;
use sqlx::PgPool;

use crate::output::{self, confirm, table, Out};
use crate::stats::figure;

#[derive(Debug, Args)]
pub struct ConsumerArgs {
    #[command(subcommand)]
    command: ConsumerCommand,
}

#[derive(Debug, Subcommand)]
enum ConsumerCommand {
    /// Create a consumer of a stream (an existing one with the same settings is left as it is).
    Create {
        /// The stream it reads.
        stream: String,
        /// The consumer's name, unique in the stream.
        name: String,
        /// A subject pattern to deliver (`*` one token, a final `>` the rest); repeat for more. Default `>`.
        #[arg(long, value_name = "PATTERN")]
        include: Vec<String>,
        /// A subject pattern never to deliver; repeat for more.
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Where it starts: beginning, now (the default) or an RFC 3339 time.
        #[arg(long, value_name = "beginning|now|RFC3339")]
        start: Option<String>,
        /// Attempts before a failing task is dead-lettered (1 to 1000, default 25).
        #[arg(long, value_name = "N")]
        max_attempts: Option<i32>,
        /// How long a claimed task belongs to its worker (default 30s).
        #[arg(long, value_name = "DURATION")]
        lease: Option<String>,
        /// Retry backoff: the first delay and the longest (default 1s,1h).
        #[arg(long, value_name = "INITIAL,MAX")]
        backoff: Option<String>,
        #[command(flatten)]
        order: OrderArgs,
    },
    /// Change a consumer's ordering by key (it must be paused, with no pending task).
    SetOrder {
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
        #[command(flatten)]
        order: OrderArgs,
        /// Hand its tasks out in any order (the default of a new consumer).
        #[arg(long, conflicts_with_all = ["ordered", "hold_key_on_dead_letter"], required_unless_present = "ordered")]
        unordered: bool,
    },
    /// List the consumers (of one stream, or all).
    List {
        /// Only this stream's consumers.
        stream: Option<String>,
    },
    /// Show a consumer's settings, lag, tasks and workers.
    Show {
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
    },
    /// Pause a consumer: its subscribers keep running and claim nothing until resumed.
    Pause {
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
    },
    /// Resume a paused consumer.
    Resume {
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
    },
    /// Move a consumer's position: replay events from there (completed tasks come back).
    Reset {
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
        /// Where to: beginning, now, an RFC 3339 time, or an event id.
        #[arg(long, value_name = "beginning|now|RFC3339|EVENT_ID")]
        to: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Delete a consumer with its tasks.
    Delete {
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

pub fn consumer_json(c: &sluice::Consumer) -> serde_json::Value {
    json!({
        "stream": c.stream,
        "name": c.name,
        "include": c.include,
        "exclude": c.exclude,
        "start_from": c.start_from,
        "max_attempts": c.max_attempts,
        "backoff_initial": output::duration(c.backoff_initial),
        "backoff_max": output::duration(c.backoff_max),
        "lease": output::duration(c.lease),
        "completed_retention": output::duration(c.completed_retention),
        "dead_retention": output::duration(c.dead_retention),
        "log_retention": output::duration(c.log_retention),
        "ordered_by_key": c.ordered_by_key,
        "hold_key_on_dead_letter": c.hold_key_on_dead_letter,
        "paused": c.paused,
        "created_at": c.created_at,
    })
}

/// FIFO per key (docs/DESIGN.md, "FIFO per key").
#[derive(Debug, clap::Args)]
struct OrderArgs {
    /// FIFO per key: tasks of events with the same key one at a time, in event
    /// order, across every subscriber; keyless events are not held back.
    #[arg(long)]
    ordered: bool,
    /// With --ordered: a dead letter holds its key until it is retried or
    /// cancelled (by default the key's next task goes).
    #[arg(long, requires = "ordered")]
    hold_key_on_dead_letter: bool,
}

impl OrderArgs {
    fn apply(&self, options: sluice::ConsumerOptions) -> sluice::ConsumerOptions {
        match (self.ordered, self.hold_key_on_dead_letter) {
            (_, true) => options.hold_key_on_dead_letter(),
            (true, false) => options.ordered_by_key(),
            (false, false) => options,
        }
    }
}

fn order_text(c: &sluice::Consumer) -> &'static str {
    match (c.ordered_by_key, c.hold_key_on_dead_letter) {
        (false, _) => "none",
        (true, false) => "by key",
        (true, true) => "by key, dead letters hold their key",
    }
}

fn parse_start(text: &str) -> Result<sluice::Start> {
    Ok(match text.trim() {
        "beginning" => sluice::Start::Beginning,
        "now" => sluice::Start::Now,
        t => sluice::Start::At(output::parse_time("--start (beginning, now or an RFC 3339 time)", t)?),
    })
}

fn parse_replay(text: &str) -> Result<sluice::Replay> {
    let t = text.trim();
    Ok(match t {
        "beginning" => sluice::Replay::Beginning,
        "now" => sluice::Replay::Now,
        _ if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
            sluice::Replay::Event(sluice::EventId(t.parse().context("invalid --to: event id out of range")?))
        }
        _ => sluice::Replay::At(output::parse_time("--to (beginning, now, an RFC 3339 time or an event id)", t)?),
    })
}

fn parse_backoff(text: &str) -> Result<(std::time::Duration, std::time::Duration)> {
    let (initial, max) = text
        .split_once(',')
        .with_context(|| format!("invalid --backoff {text:?}: write the first delay and the longest, e.g. 1s,1h"))?;
    Ok((output::parse_duration("--backoff", initial)?, output::parse_duration("--backoff", max)?))
}

fn settings_text(c: &sluice::Consumer) -> String {
    format!(
        "consumer     {} (stream {})\npaused       {}\ninclude      {}\nexclude      {}\nstart from   {}\n\
         max attempts {}\nbackoff      {} to {}\nlease        {}\nretention    completed {}, dead {}, log {}\n\
         order        {}\n",
        c.name,
        c.stream,
        if c.paused { "yes" } else { "no" },
        c.include.join(" "),
        if c.exclude.is_empty() { "-".to_string() } else { c.exclude.join(" ") },
        output::time(c.start_from),
        c.max_attempts,
        output::duration(c.backoff_initial),
        output::duration(c.backoff_max),
        output::duration(c.lease),
        output::duration(c.completed_retention),
        output::duration(c.dead_retention),
        output::duration(c.log_retention),
        order_text(c),
    )
}

pub async fn run(pool: &PgPool, out: Out, args: ConsumerArgs) -> Result<()> {
    match args.command {
        ConsumerCommand::Create { stream, name, include, exclude, start, max_attempts, lease, backoff, order } => {
            let mut options = order.apply(sluice::ConsumerOptions::default());
            if !include.is_empty() {
                options = options.include(include);
            }
            options = options.exclude(exclude);
            if let Some(start) = start {
                options = options.start(parse_start(&start)?);
            }
            if let Some(n) = max_attempts {
                options = options.max_attempts(n);
            }
            if let Some(lease) = lease {
                options = options.lease(output::parse_duration("--lease", &lease)?);
            }
            if let Some(backoff) = backoff {
                let (initial, max) = parse_backoff(&backoff)?;
                options = options.backoff(initial, max);
            }
            let c = sluice::create_consumer(pool, &stream, &name, options).await?;
            out.print(&consumer_json(&c), || settings_text(&c))
        }
        ConsumerCommand::SetOrder { stream, name, order, unordered: _ } => {
            // The existing settings, with the ordering asked for.
            let existing = sluice::get_consumer(pool, &stream, &name).await?;
            let options = order.apply(sluice::ConsumerOptions::from(&existing).unordered());
            let c = sluice::update_consumer(pool, &stream, &name, options).await?;
            out.print(&consumer_json(&c), || format!("consumer {name} of stream {stream}: order {}", order_text(&c)))
        }
        ConsumerCommand::List { stream } => {
            let consumers = sluice::list_consumers(pool, stream.as_deref()).await?;
            let rows: Vec<_> = consumers.iter().map(consumer_json).collect();
            out.print(&rows, || {
                let mut t = table(["STREAM", "CONSUMER", "INCLUDE", "EXCLUDE", "PAUSED", "CREATED"]);
                for c in &consumers {
                    t.add_row([
                        c.stream.clone(),
                        c.name.clone(),
                        c.include.join(" "),
                        c.exclude.join(" "),
                        if c.paused { "yes" } else { "no" }.to_string(),
                        output::time(Some(c.created_at)),
                    ]);
                }
                t.to_string()
            })
        }
        ConsumerCommand::Show { stream, name } => {
            let c = sluice::get_consumer(pool, &stream, &name).await?;
            let stats = sluice::queue_stats(pool, Some(&stream), Some(&name)).await?;
            let workers = sluice::list_workers(pool, Some(&stream), Some(&name)).await?;
            let mut value = consumer_json(&c);
            value["stats"] = json!(stats.consumers.first());
            value["workers"] = json!(workers);
            out.print(&value, || {
                let mut text = settings_text(&c);
                if let Some(s) = stats.consumers.first() {
                    text.push_str(&format!(
                        "lag          {} events (oldest {})\ntasks        {} scheduled, {} waiting, {} available, \
                         {} running, {} completed, {} discarded, {} cancelled\n",
                        figure(s, Figure::LagEvents),
                        output::age(s.lag_oldest_at),
                        figure(s, Figure::Scheduled),
                        figure(s, Figure::Waiting),
                        figure(s, Figure::Available),
                        figure(s, Figure::Running),
                        figure(s, Figure::Completed),
                        figure(s, Figure::Discarded),
                        figure(s, Figure::Cancelled)
                    ));
                }
                text.push_str(&format!("workers      {}\n", workers.len()));
                if !workers.is_empty() {
                    text.push('\n');
                    text.push_str(&crate::workers::workers_table(&workers).to_string());
                }
                text
            })
        }
        ConsumerCommand::Pause { stream, name } => {
            let c = sluice::pause_consumer(pool, &stream, &name).await?;
            out.print(&consumer_json(&c), || format!("paused consumer {name} of stream {stream}"))
        }
        ConsumerCommand::Resume { stream, name } => {
            let c = sluice::resume_consumer(pool, &stream, &name).await?;
            out.print(&consumer_json(&c), || format!("resumed consumer {name} of stream {stream}"))
        }
        ConsumerCommand::Reset { stream, name, to, yes } => {
            let replay = parse_replay(&to)?;
            sluice::get_consumer(pool, &stream, &name).await?;
            let what = match replay {
                sluice::Replay::Beginning => "every event the stream holds".to_string(),
                sluice::Replay::Now => "nothing: every event published so far is skipped".to_string(),
                sluice::Replay::At(t) => format!("the events published since {}", output::time(Some(t))),
                sluice::Replay::Event(id) => format!("the events from event {id} on"),
                _ => "events".to_string(),
            };
            confirm(yes, &format!("Move consumer {name:?} of stream {stream:?}: it will get {what}."))?;
            sluice::reset_position(pool, &stream, &name, replay).await?;
            out.print(&json!({"stream": stream, "consumer": name, "reset_to": to}), || {
                format!("consumer {name} of stream {stream} now reads from {to}")
            })
        }
        ConsumerCommand::Delete { stream, name, yes } => {
            let stats = sluice::queue_stats(pool, Some(&stream), Some(&name)).await?;
            let pending =
                stats.consumers.first().map(|s| s.scheduled + s.waiting + s.available + s.running).unwrap_or(0);
            confirm(
                yes,
                &format!("Delete consumer {name:?} of stream {stream:?} with its {pending} pending task(s)?"),
            )?;
            sluice::delete_consumer(pool, &stream, &name).await?;
            out.print(&json!({"deleted": {"stream": stream, "consumer": name}}), || {
                format!("deleted consumer {name} of stream {stream}")
            })
        }
    }
}
