//! The Rust side of the gateway example (`examples/gateway/run.sh`): a
//! subscriber of its own consumer on the stream that Python clients publish
//! to and consume from over the gateway. Every event reaches it as it
//! reaches them: a consumer is a consumer, whoever runs it.
//!
//! Run alone (`cargo run --example gateway_audit`), it sets up the stream
//! `orders_gateway_demo` with the consumer `audit`, publishes 20 events
//! itself and audits them. Under run.sh it audits `SLUICE_EVENTS` events of
//! `SLUICE_STREAM`/`SLUICE_CONSUMER` that the Python producer publishes.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sluice::{ConsumerOptions, HandlerError, Message, NewEvent, StreamOptions, Subscription};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let pool = common::connect().await?;
    let stream = std::env::var("SLUICE_STREAM").unwrap_or_else(|_| "orders_gateway_demo".into());
    let consumer = std::env::var("SLUICE_CONSUMER").unwrap_or_else(|_| "audit".into());
    let given: Option<usize> = std::env::var("SLUICE_EVENTS").ok().map(|n| n.parse()).transpose()?;

    let mine = match given {
        Some(_) => None,
        None => {
            // Alone: the stream, the consumer and 20 events of our own.
            sluice::migrate(&pool).await.context("migrating Sluice's schema")?;
            // Both are idempotent: a second run reuses them.
            sluice::create_stream(&pool, &stream, StreamOptions::default()).await?;
            sluice::create_consumer(&pool, &stream, &consumer, ConsumerOptions::default()).await?;
            let events = (0..20).map(|n| NewEvent::new("orders.eu.created", &serde_json::json!({"order": n})));
            let ids = sluice::publish_batch(&pool, &stream, events.collect::<Result<Vec<_>, _>>()?).await?;
            Some(ids.into_iter().map(|id| id.0).collect::<HashSet<i64>>())
        }
    };
    let wanted = given.unwrap_or(20);

    let audited = Arc::new(Mutex::new(HashSet::new()));
    let seen = audited.clone();
    let handle = sluice::sub(&pool, Subscription::new(&stream, &consumer), move |msg: Message<serde_json::Value>| {
        seen.lock().unwrap().insert(msg.id().0);
        async { Ok::<_, HandlerError>(()) }
    })
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let audited = audited.lock().unwrap();
            match &mine {
                Some(ids) => ids.iter().all(|id| audited.contains(id)),
                None => audited.len() >= wanted,
            }
        };
        if done {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            handle.shutdown(Duration::from_secs(5)).await;
            anyhow::bail!("audited {} of {wanted} events in 60 s", audited.lock().unwrap().len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown(Duration::from_secs(5)).await;
    println!("audited {wanted} events of {stream} as consumer {consumer}, beside the gateway's clients");
    Ok(())
}
