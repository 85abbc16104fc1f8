//! `sluice tasks`: list a consumer's tasks, show one, and retry, cancel or
//! discard them by id or by filter.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use sqlx::PgPool;

use crate::output::{self, confirm, table, Out};

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(subcommand)]
    command: TasksCommand,
}

/// A task state as `--state` takes it: the names the library stores.
fn parse_state(text: &str) -> Result<sluice::TaskState, String> {
    text.parse().map_err(|_| "one of scheduled, available, running, completed, discarded, cancelled".to_string())
}

#[derive(Debug, Args)]
struct Filter {
    /// Only tasks in this state; repeat for more.
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    state: Vec<sluice::TaskState>,
    /// Only tasks whose subject matches this pattern (`*` one token, a final `>` the rest).
    #[arg(long, value_name = "PATTERN")]
    subject: Option<String>,
    /// Only tasks made longer ago than this, e.g. 1h.
    #[arg(long, value_name = "DURATION")]
    older_than: Option<String>,
    /// Only tasks whose event's payload contains this JSON (Postgres `@>`), e.g. '{"customer":"c-42"}'.
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// Only tasks whose event's metadata has these entries, e.g. '{"tenant":"eu"}'.
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
}

impl Filter {
    fn build(&self) -> Result<sluice::TaskFilter> {
        let mut f = sluice::TaskFilter::default();
        for s in &self.state {
            f = f.state(*s);
        }
        if let Some(p) = &self.subject {
            f = f.subject(p);
        }
        if let Some(d) = &self.older_than {
            f = f.older_than(output::parse_duration("--older-than", d)?);
        }
        if let Some(json) = &self.payload {
            f = f.payload_contains(parse_json("--payload", json)?);
        }
        if let Some(json) = &self.metadata {
            f = f.metadata_contains(parse_json("--metadata", json)?);
        }
        Ok(f)
    }
}

fn parse_json(flag: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| anyhow::anyhow!("invalid {flag} {text:?}: not JSON ({e})"))
}

#[derive(Debug, Args)]
struct Steer {
    /// The stream.
    stream: String,
    /// The consumer.
    consumer: String,
    /// The tasks' event ids; or select them with --state and the other filters.
    #[arg(value_name = "EVENT_ID", required_unless_present = "state", conflicts_with_all = ["state", "subject", "older_than", "payload", "metadata"])]
    event_ids: Vec<i64>,
    #[command(flatten)]
    filter: Filter,
    /// Why, for the task log.
    #[arg(long)]
    reason: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Subcommand)]
enum TasksCommand {
    /// List a consumer's tasks, by event id, a page at a time.
    List {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
        #[command(flatten)]
        filter: Filter,
        /// Tasks per page (1 to 1000).
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: usize,
        /// The `next` cursor of the previous page.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
    },
    /// Show a task: its event, every attempt's error and its log.
    Show {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
        /// The task's event id.
        event_id: i64,
    },
    /// Retry dead-lettered (discarded) or cancelled tasks.
    Retry(Steer),
    /// Cancel available, scheduled or waiting tasks (they will not run), or dead letters (set aside for good).
    Cancel(Steer),
    /// Dead-letter available, scheduled or waiting tasks (they can be retried later).
    Discard(Steer),
}

use sluice::TaskAction as Action;

pub async fn run(pool: &PgPool, out: Out, args: TasksArgs) -> Result<()> {
    match args.command {
        TasksCommand::List { stream, consumer, filter, limit, after } => {
            let page = sluice::list_tasks(pool, &stream, &consumer, &filter.build()?, limit, after.as_deref()).await?;
            out.print(&page, || {
                let mut t = table(["EVENT", "STATE", "PRIORITY", "ATTEMPT", "SUBJECT", "AGE", "LAST ERROR"]);
                for task in &page.tasks {
                    let error = task
                        .errors
                        .last()
                        .and_then(|e| e["error"].as_str())
                        .map(|e| e.chars().take(60).collect::<String>())
                        .unwrap_or_default();
                    t.add_row([
                        task.event_id.to_string(),
                        task.state.as_str().to_string(),
                        task.priority.get().to_string(),
                        task.attempt.to_string(),
                        task.subject.clone(),
                        output::age(Some(task.created_at)),
                        error,
                    ]);
                }
                let mut text = t.to_string();
                if let Some(next) = &page.next {
                    text.push_str(&format!("\nmore: --after {next}"));
                }
                text
            })
        }
        TasksCommand::Show { stream, consumer, event_id } => {
            let id = sluice::EventId(event_id);
            let task = sluice::get_task(pool, &stream, &consumer, id).await?;
            let event = sluice::task_event(pool, &stream, &consumer, id).await?;
            let log = sluice::task_log(pool, &stream, &consumer, id).await?;
            let value = json!({"task": task, "event": event, "log": log});
            out.print(&value, || {
                let mut text = format!(
                    "event        {} ({}), published {}\nstate        {}, attempt {}, priority {}\n",
                    event.id,
                    event.subject,
                    output::time(Some(event.created_at)),
                    task.state.as_str(),
                    task.attempt,
                    task.priority.get()
                );
                if let Some(at) = task.schedule_at {
                    text.push_str(&format!("due          {}\n", output::time(Some(at))));
                }
                if let Some(k) = &event.key {
                    text.push_str(&format!("key          {k}\n"));
                }
                if !event.metadata.is_empty() {
                    text.push_str(&format!("metadata     {}\n", serde_json::Value::Object(event.metadata.clone())));
                }
                text.push_str(&format!("payload      {}\n", event.payload));
                if !task.errors.is_empty() {
                    text.push_str("\nerrors\n");
                    let mut t = table(["ATTEMPT", "AT", "ERROR"]);
                    for e in &task.errors {
                        t.add_row([
                            e["attempt"].to_string(),
                            e["at"].as_str().unwrap_or("-").to_string(),
                            e["error"].as_str().unwrap_or("-").to_string(),
                        ]);
                    }
                    text.push_str(&t.to_string());
                    text.push('\n');
                }
                if !log.is_empty() {
                    text.push_str("\nlog\n");
                    let mut t = table(["AT", "ATTEMPT", "ACTION", "REASON"]);
                    for l in &log {
                        t.add_row([
                            output::time(Some(l.created_at)),
                            l.attempt.to_string(),
                            l.action.clone(),
                            l.reason.clone().unwrap_or_default(),
                        ]);
                    }
                    text.push_str(&t.to_string());
                }
                text
            })
        }
        TasksCommand::Retry(s) => steer(pool, out, Action::Retry, s).await,
        TasksCommand::Cancel(s) => steer(pool, out, Action::Cancel, s).await,
        TasksCommand::Discard(s) => steer(pool, out, Action::Discard, s).await,
    }
}

async fn steer(pool: &PgPool, out: Out, action: Action, s: Steer) -> Result<()> {
    let (stream, consumer, reason) = (&s.stream, &s.consumer, s.reason.as_deref());
    if !s.event_ids.is_empty() {
        // By id: each one is done or says why not; exit 1 if any was not.
        let mut done = Vec::new();
        let mut refused = Vec::new();
        for &id in &s.event_ids {
            let id = sluice::EventId(id);
            match sluice::steer_task(pool, action, stream, consumer, id, reason).await {
                Ok(()) => done.push(id.0),
                Err(e @ (sluice::Error::TaskState { .. } | sluice::Error::TaskNotFound { .. })) => {
                    refused.push(e.to_string())
                }
                Err(e) => return Err(e.into()),
            }
        }
        // What was done is printed even when some were refused; the refusal
        // is the error line.
        if refused.is_empty() || !done.is_empty() {
            out.print(&json!({ action.past(): done, "refused": refused }), || {
                format!("{} {} task(s)", action.past(), done.len())
            })?;
        }
        if let Some(first) = refused.first() {
            bail!(
                "{first}{}",
                if refused.len() > 1 { format!(" (and {} more)", refused.len() - 1) } else { String::new() }
            );
        }
        return Ok(());
    }
    let filter = s.filter.build()?;
    let counts = sluice::count_tasks(pool, stream, consumer, &filter).await?;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    // Nothing matches: nothing to confirm. The action still runs, for the
    // library to refuse a filter it cannot apply (retry running tasks).
    if total > 0 {
        let by_state = counts.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect::<Vec<_>>().join(", ");
        confirm(
            s.yes,
            &format!("{} {total} task(s) of consumer {consumer:?} ({by_state})?", capitalized(action.name())),
        )?;
    }
    let steered = sluice::steer_tasks(pool, action, stream, consumer, &filter, reason).await?;
    let n = steered.changed.len();
    out.print(&json!({ action.past(): n }), || format!("{} {n} task(s)", action.past()))
}

fn capitalized(word: &str) -> String {
    let mut c = word.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}
