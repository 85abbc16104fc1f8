//! Fan-out: one stream, three consumers with different subject filters. Each
//! consumer gets its own task for every event its filters match, and works
//! through them independently of the others.
//!
//! - `welcome-email` includes `signups.*.created` (exactly three tokens);
//! - `analytics` includes `>` (everything);
//! - `fraud` includes `signups.>` but excludes `signups.internal.*` (exclude wins).
//!
//! The expected deliveries are computed with `sluice::subject_matches`, the
//! same rule the database applies, and checked against the tasks in the
//! database.
//!
//! Run with `cargo run --example fan_out`. It uses the database named by
//! `DATABASE_URL`, or `postgres://postgres@127.0.0.1:5432/postgres` when that
//! is unset, and leaves behind in it:
//! - Sluice's schema `sluice` (`sluice::migrate`);
//! - the stream `signups` and its three consumers, which later runs reuse;
//! - this run's seven events, until the stream's retention (7 days);
//! - each consumer's completed tasks, kept for an hour so you can look at
//!   them: `SELECT * FROM sluice.tasks WHERE state = 'completed'`.
//!
//! Runs may overlap: the subscribers of one consumer compete for its tasks, so
//! a run may handle some of another run's events (it prints whose they are).
//! Each run checks its own events' tasks in the database, whoever handled them.

mod common;

use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sluice::{
    ConsumerOptions, EventId, HandlerError, Message, NewEvent, StreamOptions, SubscriberHandle, Subscription, TaskState,
};

const STREAM: &str = "signups";

/// The consumers: name, include patterns, exclude patterns.
const CONSUMERS: [(&str, &[&str], &[&str]); 3] = [
    ("welcome-email", &["signups.*.created"], &[]),
    ("analytics", &[">"], &[]),
    ("fraud", &["signups.>"], &["signups.internal.*"]),
];

#[derive(Debug, Serialize, Deserialize)]
struct Signup {
    user: String,
}

/// Whether a consumer with these filters gets an event with this subject.
fn delivers(include: &[&str], exclude: &[&str], subject: &str) -> bool {
    include.iter().any(|p| sluice::subject_matches(p, subject))
        && !exclude.iter().any(|p| sluice::subject_matches(p, subject))
}

/// Starts a subscriber that prints every event it gets, with the run that
/// published it.
async fn subscribe(pool: &sqlx::PgPool, consumer: &'static str, run: &str) -> Result<SubscriberHandle, sluice::Error> {
    let subscription = Subscription::new(STREAM, consumer).poll_interval(Duration::from_millis(200));
    let me = run.to_string();
    sluice::sub(pool, subscription, move |msg: Message<Signup>| {
        let from = match msg.metadata().get("run") {
            Some(run) if *run == me => "this run".to_string(),
            Some(run) => format!("run {run}"),
            None => "no run id".to_string(),
        };
        async move {
            println!("[{consumer:<13}] {:<28} event {} ({}, {from})", msg.subject(), msg.id(), msg.payload().user);
            Ok::<_, HandlerError>(())
        }
    })
    .await
}

/// Whether the consumer has a task for the event: `Some(state)`, or `None`
/// when it has none (yet, or at all).
async fn task_state(pool: &sqlx::PgPool, consumer: &str, id: EventId) -> Result<Option<TaskState>, sluice::Error> {
    match sluice::get_task(pool, STREAM, consumer, id).await {
        Ok(task) => Ok(Some(task.state)),
        Err(sluice::Error::TaskNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let pool = common::connect().await?;

    // Idempotent set-up, safe to run from several processes at once. Consumers
    // start at `Start::Now` (the default) when first created and keep their
    // positions, so a rerun does not see earlier runs' events. Completed tasks
    // are kept for an hour.
    sluice::migrate(&pool).await.context("migrating Sluice's schema")?;
    sluice::create_stream(&pool, STREAM, StreamOptions::default()).await?;
    for (name, include, exclude) in CONSUMERS {
        let options = ConsumerOptions::default()
            .include(include.iter().copied())
            .exclude(exclude.iter().copied())
            .completed_retention(Duration::from_secs(3600));
        sluice::create_consumer(&pool, STREAM, name, options).await?;
    }

    // This run's events carry its id in their metadata, so the handlers can
    // say which run published what they handle.
    let run = format!("{:08x}", rand::random::<u32>());
    println!("run {run}");
    let mut handles = Vec::new();
    for (name, _, _) in CONSUMERS {
        handles.push(subscribe(&pool, name, &run).await?);
    }

    // One statement publishes the whole batch.
    let subjects = [
        "signups.eu.created",
        "signups.us.created",
        "signups.internal.created",
        "signups.eu.verified",
        "signups.us.deleted",
        "signups.internal.reindexed",
        "signups.eu.created.sso",
    ];
    let events = subjects
        .iter()
        .enumerate()
        .map(|(i, subject)| {
            Ok(NewEvent::new(*subject, &Signup { user: format!("user-{}", i + 1) })?.metadata("run", &run))
        })
        .collect::<Result<Vec<_>, sluice::InvalidInput>>()?;
    let ids = sluice::publish_batch(&pool, STREAM, events).await?;
    println!("published {} events ({}..={})", ids.len(), ids[0], ids[ids.len() - 1]);

    // What each consumer should get, by the same rule the database applies.
    let expected: Vec<Vec<EventId>> = CONSUMERS
        .iter()
        .map(|(_, include, exclude)| {
            ids.iter()
                .zip(subjects)
                .filter(|(_, subject)| delivers(include, exclude, subject))
                .map(|(id, _)| *id)
                .collect()
        })
        .collect();

    // Wait until every expected task is completed, then a moment more (the
    // subscribers poll every 200 ms), so a task that should not exist would
    // show up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'wait: for ((name, _, _), expected) in CONSUMERS.iter().zip(&expected) {
        for &id in expected {
            while task_state(&pool, name, id).await? != Some(TaskState::Completed) {
                if tokio::time::Instant::now() > deadline {
                    break 'wait;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for handle in handles {
        handle.shutdown(Duration::from_secs(5)).await;
    }

    // Each consumer's tasks for this run's events, as the database has them.
    println!();
    let mut wrong = 0;
    for ((name, include, exclude), expected) in CONSUMERS.iter().zip(&expected) {
        let mut completed = Vec::new();
        let mut other = Vec::new();
        for &id in &ids {
            match task_state(&pool, name, id).await? {
                Some(TaskState::Completed) => completed.push(id),
                Some(state) => other.push(format!("event {id} {state}")),
                None => {}
            }
        }
        let verdict = if completed == *expected && other.is_empty() {
            "as expected".to_string()
        } else {
            wrong += 1;
            format!("NOT as expected (expected events {expected:?}, got {completed:?}, others: {other:?})")
        };
        println!(
            "{name:<13} include {include:?} exclude {exclude:?}: completed {} of {} events, expected {}: {verdict}",
            completed.len(),
            ids.len(),
            expected.len()
        );
    }
    if wrong > 0 {
        bail!("{wrong} consumers did not get exactly their events within 30 s");
    }
    Ok(())
}
