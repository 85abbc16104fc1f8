//! Fan-out: one stream, three consumers with different subject filters. Each
//! consumer gets its own task for every event its filters match, and works
//! through them independently of the others.
//!
//! - `welcome-email` includes `signups.*.created` (exactly three tokens);
//! - `analytics` includes `>` (everything);
//! - `fraud` includes `signups.>` but excludes `signups.internal.*` (exclude wins).
//!
//! The expected deliveries are computed with `sluice::subject_matches`, the
//! same rule the database applies.
//!
//! Run with `cargo run --example fan_out`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice::{
    ConsumerOptions, EventId, HandlerError, Message, NewEvent, StreamOptions, SubscriberHandle, Subscription,
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

/// Starts a subscriber that prints and records every event it gets.
async fn subscribe(
    pool: &sqlx::PgPool,
    consumer: &'static str,
    seen: Arc<Mutex<Vec<EventId>>>,
) -> Result<SubscriberHandle, sluice::Error> {
    let subscription = Subscription::new(STREAM, consumer).poll_interval(Duration::from_millis(200));
    sluice::sub(pool, subscription, move |msg: Message<Signup>| {
        let seen = seen.clone();
        async move {
            println!("[{consumer:<13}] {:<28} event {} ({})", msg.subject(), msg.id(), msg.payload().user);
            seen.lock().expect("seen poisoned").push(msg.id());
            Ok::<_, HandlerError>(())
        }
    })
    .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let pool = support::demo_database("sluice_demo").await;

    // Idempotent set-up. Consumers start at `Start::Now` (the default) when
    // first created and keep their positions, so a rerun sees only new events.
    sluice::migrate(&pool).await?;
    sluice::create_stream(&pool, STREAM, StreamOptions::default()).await?;
    for (name, include, exclude) in CONSUMERS {
        let options = ConsumerOptions::default().include(include.iter().copied()).exclude(exclude.iter().copied());
        sluice::create_consumer(&pool, STREAM, name, options).await?;
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
        .map(|(i, subject)| NewEvent::new(*subject, &Signup { user: format!("user-{}", i + 1) }))
        .collect::<Result<Vec<_>, _>>()?;
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

    let mut handles = Vec::new();
    let mut seen = Vec::new();
    for (name, _, _) in CONSUMERS {
        let received = Arc::new(Mutex::new(Vec::new()));
        handles.push(subscribe(&pool, name, received.clone()).await?);
        seen.push(received);
    }

    // Only this run's events count: a consumer might still hold tasks of an
    // earlier, interrupted run.
    let ours: BTreeSet<EventId> = ids.iter().copied().collect();
    // Sorted, duplicates kept: a repeated delivery would show as a mismatch.
    let received = |i: usize| -> Vec<EventId> {
        let mut got: Vec<EventId> =
            seen[i].lock().expect("seen poisoned").iter().filter(|id| ours.contains(id)).copied().collect();
        got.sort();
        got
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (0..CONSUMERS.len()).any(|i| received(i).len() < expected[i].len()) {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A moment more, so a delivery that should not happen would show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for handle in handles {
        handle.shutdown(Duration::from_secs(5)).await;
    }

    println!();
    let mut wrong = 0;
    for (i, (name, include, exclude)) in CONSUMERS.iter().enumerate() {
        let got = received(i);
        let verdict = if got == expected[i] {
            "as expected"
        } else {
            wrong += 1;
            "NOT as expected"
        };
        println!(
            "{name:<13} include {include:?} exclude {exclude:?}: got {} of {} events, expected {}: {verdict}",
            got.len(),
            ids.len(),
            expected[i].len()
        );
    }
    if wrong > 0 {
        return Err(format!("{wrong} consumers did not get exactly their events within 30 s").into());
    }
    Ok(())
}
