//! Publish a few events and process them with two consumers.
//!
//! Run with `cargo run --example quickstart` (uses DATABASE_URL, a local
//! Postgres on 127.0.0.1:5432, or Docker).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice::{ConsumerOptions, HandlerError, Message, NewEvent, StreamOptions, Subscription};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u32,
    region: String,
    total_cents: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let pool = support::demo_database("sluice_demo").await;

    // Idempotent set-up: the schema, a stream and two consumers.
    sluice::migrate(&pool).await?;
    sluice::create_stream(&pool, "orders", StreamOptions::default()).await?;
    sluice::create_consumer(&pool, "orders", "billing", ConsumerOptions::default().include(["orders.*.created"]))
        .await?;
    sluice::create_consumer(&pool, "orders", "audit", ConsumerOptions::default()).await?;

    // Every consumer gets its own task for each matching event.
    let billed = Arc::new(AtomicUsize::new(0));
    let audited = Arc::new(AtomicUsize::new(0));
    let b = billed.clone();
    let billing = sluice::sub(&pool, Subscription::new("orders", "billing"), move |msg: Message<Order>| {
        let b = b.clone();
        async move {
            let order = msg.payload();
            println!(
                "[billing] {:<20} order {} in {}: {} cents",
                msg.subject(),
                order.id,
                order.region,
                order.total_cents
            );
            b.fetch_add(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    })
    .await?;
    let a = audited.clone();
    let audit = sluice::sub(&pool, Subscription::new("orders", "audit"), move |msg: Message<serde_json::Value>| {
        let a = a.clone();
        async move {
            println!("[audit]   {:<20} event {} attempt {}", msg.subject(), msg.id(), msg.attempt());
            a.fetch_add(1, Ordering::SeqCst);
            Ok::<_, HandlerError>(())
        }
    })
    .await?;

    // One statement publishes the whole batch.
    let mut events = Vec::new();
    for id in 1..=5u32 {
        let region = if id % 2 == 0 { "eu" } else { "us" };
        let order = Order { id, region: region.into(), total_cents: 1000 * u64::from(id) };
        events.push(NewEvent::new(format!("orders.{region}.created"), &order)?.key(format!("order-{id}")));
        events.push(NewEvent::new(format!("orders.{region}.shipped"), &order)?.key(format!("order-{id}")));
    }
    let ids = sluice::publish_batch(&pool, "orders", events).await?;
    println!("published {} events ({}..={})", ids.len(), ids[0], ids[ids.len() - 1]);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while billed.load(Ordering::SeqCst) < 5 || audited.load(Ordering::SeqCst) < 10 {
        if tokio::time::Instant::now() > deadline {
            return Err("events were not processed within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    billing.shutdown(Duration::from_secs(5)).await;
    audit.shutdown(Duration::from_secs(5)).await;
    println!(
        "done: billing handled {}, audit handled {}",
        billed.load(Ordering::SeqCst),
        audited.load(Ordering::SeqCst)
    );
    Ok(())
}
