//! Publish a few events and process them with two consumers.
//!
//! Run with `cargo run --example quickstart`. It uses the database named by
//! `DATABASE_URL`, or `postgres://postgres@127.0.0.1:5432/postgres` when that
//! is unset, and leaves behind in it:
//! - Sluice's schema `sluice` (`sluice::migrate`);
//! - the stream `orders` and its consumers `billing` and `audit`, which later
//!   runs reuse;
//! - this run's ten events, until the stream's retention (7 days);
//! - the completed tasks, kept for an hour so you can look at them:
//!   `SELECT * FROM sluice.tasks WHERE state = 'completed'`.
//!
//! Runs may overlap: subscribers of one consumer compete for its tasks, so a
//! run may handle some of another run's events (it prints whose they are).
//! Each run therefore waits for its own events' tasks to be completed in the
//! database, whoever handles them, instead of counting its handler calls.

mod common;

use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sluice::{ConsumerOptions, EventId, HandlerError, Message, NewEvent, StreamOptions, Subscription, TaskState};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u32,
    region: String,
    total_cents: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let pool = common::connect().await?;

    // Idempotent set-up, safe to run from several processes at once: the
    // schema, a stream and two consumers. Completed tasks are kept for an hour.
    sluice::migrate(&pool).await.context("migrating Sluice's schema")?;
    sluice::create_stream(&pool, "orders", StreamOptions::default()).await?;
    let keep = Duration::from_secs(3600);
    let billing_options = ConsumerOptions::default().include(["orders.*.created"]).completed_retention(keep);
    sluice::create_consumer(&pool, "orders", "billing", billing_options).await?;
    sluice::create_consumer(&pool, "orders", "audit", ConsumerOptions::default().completed_retention(keep)).await?;

    // This run's events carry its id in their metadata, so the handlers can
    // say which run published what they handle.
    let run = format!("{:08x}", rand::random::<u32>());
    println!("run {run}");

    // Every consumer gets its own task for each matching event.
    let me = run.clone();
    let billing = sluice::sub(&pool, Subscription::new("orders", "billing"), move |msg: Message<Order>| {
        let from = whose(&msg, &me);
        async move {
            let order = msg.payload();
            println!(
                "[billing] {:<20} order {} in {}: {} cents ({from})",
                msg.subject(),
                order.id,
                order.region,
                order.total_cents
            );
            Ok::<_, HandlerError>(())
        }
    })
    .await?;
    let me = run.clone();
    let audit = sluice::sub(&pool, Subscription::new("orders", "audit"), move |msg: Message<serde_json::Value>| {
        let from = whose(&msg, &me);
        async move {
            println!("[audit]   {:<20} event {} attempt {} ({from})", msg.subject(), msg.id(), msg.attempt());
            Ok::<_, HandlerError>(())
        }
    })
    .await?;

    // One statement publishes the whole batch.
    let mut events = Vec::new();
    for id in 1..=5u32 {
        let region = if id % 2 == 0 { "eu" } else { "us" };
        let order = Order { id, region: region.into(), total_cents: 1000 * u64::from(id) };
        for what in ["created", "shipped"] {
            events.push(
                NewEvent::new(format!("orders.{region}.{what}"), &order)?
                    .key(format!("order-{id}"))
                    .metadata("run", run.as_str()),
            );
        }
    }
    let subjects: Vec<String> = events.iter().map(|e| e.subject().to_string()).collect();
    let ids = sluice::publish_batch(&pool, "orders", events).await?;
    println!("published {} events ({}..={})", ids.len(), ids[0], ids[ids.len() - 1]);

    // billing gets the five `created` events (its filter), audit all ten.
    let billed: Vec<EventId> = ids
        .iter()
        .zip(&subjects)
        .filter(|(_, subject)| sluice::subject_matches("orders.*.created", subject))
        .map(|(id, _)| *id)
        .collect();
    let waited = async {
        wait_until_completed(&pool, "billing", &billed).await?;
        wait_until_completed(&pool, "audit", &ids).await
    };
    let result = tokio::time::timeout(Duration::from_secs(30), waited).await;
    billing.shutdown(Duration::from_secs(5)).await;
    audit.shutdown(Duration::from_secs(5)).await;
    match result {
        Ok(done) => done?,
        Err(_) => bail!("this run's events were not all processed within 30 s"),
    }
    println!("done: billing completed {} tasks of run {run}, audit {}", billed.len(), ids.len());
    Ok(())
}

/// "this run" or "run <id>", from the event's metadata.
fn whose<T>(msg: &Message<T>, me: &str) -> String {
    match msg.metadata().get("run") {
        Some(run) if run == me => "this run".to_string(),
        Some(run) => format!("run {run}"),
        None => "no run id".to_string(),
    }
}

/// Waits until the consumer's tasks for these events are completed. A task
/// appears once a subscriber has materialized its event.
async fn wait_until_completed(pool: &sqlx::PgPool, consumer: &str, ids: &[EventId]) -> anyhow::Result<()> {
    for &id in ids {
        loop {
            match sluice::get_task(pool, "orders", consumer, id).await {
                Ok(task) if task.state == TaskState::Completed => break,
                Ok(task) if matches!(task.state, TaskState::Discarded | TaskState::Cancelled) => {
                    bail!("{consumer}'s task for event {id} ended {}: {:?}", task.state, task.errors)
                }
                Ok(_) | Err(sluice::Error::TaskNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}
