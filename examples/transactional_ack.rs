//! A business write and the ack in one transaction: both commit or neither.
//!
//! Run with `cargo run --example transactional_ack`. It uses the database
//! named by `DATABASE_URL`, or `postgres://postgres@127.0.0.1:5432/postgres`
//! when that is unset, and leaves behind in it:
//! - Sluice's schema `sluice` (`sluice::migrate`);
//! - the stream `payments` and its consumer `ledger`, which later runs reuse;
//! - this run's three events, until the stream's retention (7 days);
//! - the business table `ledger_entries`, with one row per payment booked.
//!
//! The completed tasks are deleted at ack (the default): the ledger rows are
//! the record. Runs may overlap: each waits until its own payments are in the
//! ledger, whichever run's subscriber booked them.

mod common;

use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sluice::{ConsumerOptions, HandlerError, Message, NewEvent, StreamOptions, Subscription};

#[derive(Debug, Serialize, Deserialize)]
struct Payment {
    order_id: u32,
    amount_cents: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let pool = common::connect().await?;

    // Idempotent set-up, safe to run from several processes at once.
    sluice::migrate(&pool).await.context("migrating Sluice's schema")?;
    sluice::create_stream(&pool, "payments", StreamOptions::default()).await?;
    sluice::create_consumer(&pool, "payments", "ledger", ConsumerOptions::default()).await?;
    create_ledger(&pool).await.context("creating the table ledger_entries")?;

    let db = pool.clone();
    let ledger = sluice::sub(&pool, Subscription::new("payments", "ledger"), move |msg: Message<Payment>| {
        let db = db.clone();
        async move {
            let mut tx = db.begin().await?;
            sqlx::query("INSERT INTO ledger_entries (event_id, order_id, amount_cents) VALUES ($1, $2, $3)")
                .bind(msg.id().0)
                .bind(msg.payload().order_id as i32)
                .bind(msg.payload().amount_cents)
                .execute(&mut *tx)
                .await?;
            // The task completes only if this transaction commits. If the
            // lease was lost meanwhile, ack_tx fails and `?` rolls back.
            msg.ack_tx(&mut *tx).await?;
            tx.commit().await?;
            println!(
                "booked order {} ({} cents) with event {}",
                msg.payload().order_id,
                msg.payload().amount_cents,
                msg.id()
            );
            Ok::<_, HandlerError>(())
        }
    })
    .await?;

    // Publishing inside a transaction: the events exist only if it commits.
    let mut tx = pool.begin().await?;
    let events =
        (1..=3).map(|i| NewEvent::new("payments.received", &Payment { order_id: i, amount_cents: 250 * i64::from(i) }));
    let ids = sluice::publish_batch(&mut *tx, "payments", events.collect::<Result<Vec<_>, _>>()?).await?;
    tx.commit().await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let booked: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE event_id = ANY($1)")
            .bind(ids.iter().map(|id| id.0).collect::<Vec<_>>())
            .fetch_one(&pool)
            .await?;
        if booked == ids.len() as i64 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            ledger.shutdown(Duration::from_secs(5)).await;
            bail!("only {booked} of {} payments were booked within 30 s", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ledger.shutdown(Duration::from_secs(5)).await;
    println!("all {} payments booked exactly once", ids.len());
    Ok(())
}

/// The application's own table. Your migrations would create it; here one
/// statement stands in for them, under an advisory lock as migration tools
/// take: two concurrent `CREATE TABLE IF NOT EXISTS` of one table can fail
/// (both see it missing, and the second insert into the catalog conflicts).
async fn create_ledger(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ledger_entries'))").execute(&mut *tx).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS ledger_entries (
             event_id bigint PRIMARY KEY, order_id integer NOT NULL, amount_cents bigint NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
