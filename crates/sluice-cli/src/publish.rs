//! `sluice publish`: one event from the arguments, or many from NDJSON.

use std::io::{BufRead, BufReader, IsTerminal, Read};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use crate::output::{self, Out};

/// Events per transaction when publishing a file.
const BATCH: usize = 500;

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The stream to publish to.
    stream: String,
    /// The event's subject, dot-separated tokens (orders.eu.created).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    subject: Option<String>,
    /// The payload as JSON; read from stdin when left out.
    #[arg(value_name = "JSON", conflicts_with = "file")]
    payload: Option<String>,
    /// Priority, 1 (lowest, the default) to 5 (highest).
    #[arg(long, value_name = "1-5", conflicts_with = "file")]
    priority: Option<i64>,
    /// The event's key.
    #[arg(long, conflicts_with = "file")]
    key: Option<String>,
    /// Deliver no earlier than this RFC 3339 time.
    #[arg(long, value_name = "RFC3339", conflicts_with = "file")]
    deliver_at: Option<String>,
    /// Metadata entry; repeat for more.
    #[arg(long, value_name = "K=V", conflicts_with = "file")]
    metadata: Vec<String>,
    /// Publish NDJSON from a file (`-` for stdin): one object per line with
    /// `subject`, `payload` and optionally `priority`, `key`, `deliver_at`,
    /// `metadata`. Written in batches of 500, each in one transaction.
    #[arg(long, value_name = "PATH|-")]
    file: Option<String>,
    /// With --file: report bad lines and publish the rest.
    #[arg(long, requires = "file")]
    skip_invalid: bool,
}

/// One line of an NDJSON file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    subject: String,
    payload: serde_json::Value,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    deliver_at: Option<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

/// Builds an event, checking everything that can be checked before the database sees it.
fn event(
    subject: &str,
    payload: &serde_json::Value,
    priority: Option<i64>,
    key: Option<&str>,
    deliver_at: Option<&str>,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> Result<sluice::NewEvent> {
    sluice::check_subject(subject)?;
    let mut e = sluice::NewEvent::new(subject, payload)?;
    if let Some(p) = priority {
        e = e.priority(sluice::Priority::new(p)?);
    }
    if let Some(k) = key {
        e = e.key(k);
    }
    if let Some(at) = deliver_at {
        e = e.deliver_at(output::parse_time("deliver_at", at)?);
    }
    for (k, v) in metadata {
        e = e.metadata(k, v);
    }
    Ok(e)
}

pub async fn run(pool: &PgPool, out: Out, args: PublishArgs) -> Result<()> {
    if let Some(path) = &args.file {
        return publish_file(pool, out, &args.stream, path, args.skip_invalid).await;
    }
    let subject = args.subject.as_deref().context("a subject is required")?;
    let text = match &args.payload {
        Some(text) => text.clone(),
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the payload from stdin")?;
            text
        }
    };
    let payload: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("invalid JSON payload: {e}"))?;
    let mut metadata = Vec::new();
    for entry in &args.metadata {
        let (k, v) =
            entry.split_once('=').with_context(|| format!("invalid --metadata {entry:?}: write it as KEY=VALUE"))?;
        metadata.push((k.to_string(), v.to_string()));
    }
    let e = event(subject, &payload, args.priority, args.key.as_deref(), args.deliver_at.as_deref(), metadata)?;
    let id = sluice::publish(pool, &args.stream, e).await?;
    out.print(&json!({"stream": args.stream, "event_id": id.0}), || format!("published event {id}"))
}

async fn publish_file(pool: &PgPool, out: Out, stream: &str, path: &str, skip_invalid: bool) -> Result<()> {
    // Fail on an unknown stream before reading anything.
    sluice::get_stream(pool, stream).await?;
    let (reader, size, name): (Box<dyn BufRead>, Option<u64>, String) = if path == "-" {
        (Box::new(BufReader::new(std::io::stdin())), None, "stdin".to_string())
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::new(file)), size, path.to_string())
    };
    // On a terminal only: piped, stderr gets nothing but errors.
    let bar = if std::io::stderr().is_terminal() {
        match size {
            Some(bytes) => ProgressBar::new(bytes).with_style(
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}").expect("a valid template"),
            ),
            None => ProgressBar::new_spinner(),
        }
    } else {
        ProgressBar::hidden()
    };
    let mut published = 0_usize;
    let mut skipped = 0_usize;
    let mut batch = Vec::with_capacity(BATCH);
    let mut first_line_of_batch = 1;
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("reading line {number} of {name}"))?;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        if batch.is_empty() {
            first_line_of_batch = number;
        }
        let parsed = serde_json::from_str::<Line>(&line).map_err(|e| anyhow::anyhow!("{e}")).and_then(|l| {
            event(&l.subject, &l.payload, l.priority, l.key.as_deref(), l.deliver_at.as_deref(), l.metadata)
        });
        match parsed {
            Ok(e) => batch.push(e),
            Err(e) if skip_invalid => {
                skipped += 1;
                bar.suspend(|| eprintln!("skipped line {number} of {name}: {}", crate::cli::one_line(&e)));
            }
            Err(e) => {
                bar.finish_and_clear();
                bail!(
                    "line {number} of {name}: {}; nothing of lines {first_line_of_batch}-{number} was published \
                     ({published} events of earlier lines were)",
                    crate::cli::one_line(&e)
                );
            }
        }
        if batch.len() == BATCH {
            published += write(pool, stream, &mut batch, published).await?;
            bar.set_message(format!("{published} events"));
        }
    }
    if !batch.is_empty() {
        published += write(pool, stream, &mut batch, published).await?;
    }
    bar.finish_and_clear();
    out.print(&json!({"stream": stream, "published": published, "skipped": skipped}), || {
        if skipped > 0 {
            format!("published {published} events to {stream}; skipped {skipped} invalid lines")
        } else {
            format!("published {published} events to {stream}")
        }
    })
}

async fn write(pool: &PgPool, stream: &str, batch: &mut Vec<sluice::NewEvent>, so_far: usize) -> Result<usize> {
    let n = batch.len();
    sluice::publish_batch(pool, stream, std::mem::take(batch))
        .await
        .with_context(|| format!("publishing a batch of {n} events ({so_far} published before it)"))?;
    Ok(n)
}
