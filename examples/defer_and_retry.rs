//! Three ways a handler can react to a failure, and what Sluice records for each:
//!
//! - the downstream service is unavailable: defer the task by hand, with a delay
//!   and a priority that grow with `msg.attempt()`, and a reason for the log;
//! - a transient error: return a retryable `HandlerError`, and Sluice retries
//!   after the consumer's backoff until `max_attempts` runs out;
//! - a poison message: `HandlerError::discard` dead-letters it at once.
//!
//! Each event's payload says how it behaves, so every run goes the same way.
//! Completed tasks are kept for an hour, so the example can show every task's
//! final state, its errors and its audit log.
//!
//! Run with `cargo run --example defer_and_retry`. It uses the database named
//! by `DATABASE_URL`, or `postgres://postgres@127.0.0.1:5432/postgres` when
//! that is unset, and leaves behind in it:
//! - Sluice's schema `sluice` (`sluice::migrate`);
//! - the stream `jobs` and its consumer `defer-demo`, which later runs reuse;
//! - this run's five events, until the stream's retention (7 days);
//! - their tasks: the completed ones for an hour, the discarded ones (dead
//!   letters) for 7 days, and the audit log (`sluice.task_log`) for 30 days.
//!
//! Runs may overlap: the subscribers of one consumer compete for its tasks,
//! so a run may handle some of another run's jobs. Each run waits for its own
//! jobs' tasks to settle in the database, whoever handles them.

mod common;

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sluice::{
    ConsumerOptions, Defer, EventId, HandlerError, Message, NewEvent, Priority, StreamOptions, Subscription, TaskState,
};
use tokio::time::Instant;

const STREAM: &str = "jobs";
const CONSUMER: &str = "defer-demo";

/// What a job does, decided by its payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Job {
    /// Works the first time.
    Ok,
    /// The downstream service is down until this attempt.
    FlakyDownstream { succeed_on_attempt: i32 },
    /// Fails with a transient error until this attempt.
    Transient { succeed_on_attempt: i32 },
    /// Can never work.
    Poison,
}

/// Why a call to the (simulated) downstream service failed.
enum Failure {
    /// The service is down: no point retrying soon, come back later.
    Unavailable,
    /// A hiccup: retry with the usual backoff.
    Transient(String),
    /// The input itself is bad: no retry will ever fix it.
    Poison(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unavailable => f.write_str("downstream unavailable"),
            Failure::Transient(e) | Failure::Poison(e) => f.write_str(e),
        }
    }
}

/// The simulated downstream call: its outcome depends only on the job and the attempt.
fn call_downstream(job: &Job, attempt: i32) -> Result<(), Failure> {
    match *job {
        Job::Ok => Ok(()),
        Job::FlakyDownstream { succeed_on_attempt } if attempt < succeed_on_attempt => Err(Failure::Unavailable),
        Job::Transient { succeed_on_attempt } if attempt < succeed_on_attempt => {
            Err(Failure::Transient(format!("connection reset (attempt {attempt})")))
        }
        Job::FlakyDownstream { .. } | Job::Transient { .. } => Ok(()),
        Job::Poison => Err(Failure::Poison("malformed payload: no customer id".into())),
    }
}

async fn handle(msg: Message<Job>, started: Instant) -> Result<(), HandlerError> {
    let attempt = msg.attempt();
    let at = started.elapsed().as_millis();
    let line = format!(
        "{at:>5} ms  [{CONSUMER}] event {} {:<22} attempt {attempt} priority {}",
        msg.id(),
        msg.subject(),
        msg.priority()
    );
    match call_downstream(msg.payload(), attempt) {
        Ok(()) => {
            println!("{line}: ok");
            Ok(())
        }
        Err(failure @ Failure::Unavailable) => {
            // Back off harder and come back with a higher priority each time.
            // Deferrals count as attempts, so msg.attempt() grows with them.
            let delay = Duration::from_millis(200) * 2u32.pow((attempt - 1).clamp(0, 10) as u32);
            let priority = Priority::new(i64::from(attempt + 1).min(5))?;
            msg.defer(Defer::by(delay).priority(priority).reason(format!("{failure}, next try in {delay:?}"))).await?;
            println!("{line}: {failure} -> deferred by {delay:?} with priority {priority}");
            // The task is settled (deferred) already: this Ok does not ack it.
            Ok(())
        }
        Err(Failure::Transient(error)) => {
            println!("{line}: {error} -> retry after the consumer's backoff");
            Err(HandlerError::new(error))
        }
        Err(Failure::Poison(error)) => {
            println!("{line}: {error} -> discarded");
            Err(HandlerError::discard(error))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let pool = common::connect().await?;

    // Idempotent set-up, safe to run from several processes at once. The
    // consumer starts at `Start::Now` (the default) when it is first created
    // and keeps its position, so a rerun does not see earlier runs' events.
    // Short retry backoff (100 ms doubling to 1 s), 4 attempts at most.
    sluice::migrate(&pool).await.context("migrating Sluice's schema")?;
    sluice::create_stream(&pool, STREAM, StreamOptions::default()).await?;
    let consumer = ConsumerOptions::default()
        .max_attempts(4)
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .completed_retention(Duration::from_secs(3600));
    sluice::create_consumer(&pool, STREAM, CONSUMER, consumer).await?;

    let started = Instant::now();
    let subscription = Subscription::new(STREAM, CONSUMER).poll_interval(Duration::from_millis(200));
    let worker = sluice::sub(&pool, subscription, move |msg: Message<Job>| handle(msg, started)).await?;

    // Each job with the final state it should reach.
    let jobs = [
        ("jobs.ok", Job::Ok, TaskState::Completed),
        ("jobs.flaky_downstream", Job::FlakyDownstream { succeed_on_attempt: 3 }, TaskState::Completed),
        ("jobs.transient", Job::Transient { succeed_on_attempt: 2 }, TaskState::Completed),
        ("jobs.transient_hopeless", Job::Transient { succeed_on_attempt: 10 }, TaskState::Discarded),
        ("jobs.poison", Job::Poison, TaskState::Discarded),
    ];
    let events = jobs.iter().map(|(subject, job, _)| NewEvent::new(*subject, job)).collect::<Result<Vec<_>, _>>()?;
    let ids = sluice::publish_batch(&pool, STREAM, events).await?;
    println!("published {} jobs: events {}..={}", ids.len(), ids[0], ids[ids.len() - 1]);

    // Wait until every task is settled for good: completed or discarded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut settled = 0;
        for &id in &ids {
            match sluice::get_task(&pool, STREAM, CONSUMER, id).await {
                Ok(task) if matches!(task.state, TaskState::Completed | TaskState::Discarded) => settled += 1,
                Ok(_) => {}
                // Not materialized yet: the subscriber creates tasks as it refills.
                Err(sluice::Error::TaskNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if settled == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            worker.shutdown(Duration::from_secs(5)).await;
            bail!("only {settled} of {} jobs were settled within 30 s", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown(Duration::from_secs(5)).await;

    println!();
    let mut surprises = 0;
    for (&id, (_, job, expected)) in ids.iter().zip(&jobs) {
        surprises += usize::from(report(&pool, id, job, *expected).await?);
    }
    if surprises > 0 {
        bail!("{surprises} jobs did not end as expected");
    }
    println!("every job ended as expected");
    Ok(())
}

/// Prints what Sluice recorded for one task; returns whether it ended in another state than expected.
async fn report(pool: &sqlx::PgPool, id: EventId, job: &Job, expected: TaskState) -> Result<bool, sluice::Error> {
    let task = sluice::get_task(pool, STREAM, CONSUMER, id).await?;
    let mark = if task.state == expected { "" } else { "  <-- UNEXPECTED" };
    println!("event {id} {} {}", task.subject, serde_json::to_string(job).unwrap_or_default());
    println!("  final state {}, after {} attempt(s), priority {}{mark}", task.state, task.attempt, task.priority);
    for error in &task.errors {
        println!("  error   attempt {}: {}", error["attempt"], error["error"].as_str().unwrap_or("?"));
    }
    for entry in sluice::task_log(pool, STREAM, CONSUMER, id).await? {
        let due = entry
            .schedule_at
            .map(|at| format!(", due {} ms later", (at - entry.created_at).num_milliseconds()))
            .unwrap_or_default();
        let priority = entry.priority.map(|p| format!(", priority {p}")).unwrap_or_default();
        println!(
            "  log     attempt {}: {}{priority}{due}: {}",
            entry.attempt,
            entry.action,
            entry.reason.as_deref().unwrap_or("(no reason)")
        );
    }
    Ok(task.state != expected)
}
