//! The workers (subscribers) of each consumer, as their heartbeats describe them.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use crate::error::Error;
use crate::pooler::on_pool;
use crate::sql;

/// A subscriber, from its row in `sluice.workers`.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
#[non_exhaustive]
pub struct Worker {
    /// The worker's id (a fresh one per subscriber).
    pub id: uuid::Uuid,
    /// The stream.
    pub stream: String,
    /// The consumer it works for.
    pub consumer: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: i32,
    /// `active` (tasks in hand), `idle`, `stopping`, or `gone`: silent past
    /// its liveness limit, whatever it last said; housekeeping frees its
    /// tasks and then forgets it.
    pub status: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Milliseconds since that heartbeat, by the database's clock.
    pub heartbeat_age_ms: i64,
    /// Running tasks it holds.
    pub tasks_held: i64,
    /// Tasks it completed in about the last minute.
    pub completed_last_minute: i32,
    /// Attempts that failed in its hands in about the last minute.
    pub failed_last_minute: i32,
}

/// The workers of `stream` (every stream's when `None`; only `consumer`'s
/// when given), by stream, consumer and start.
pub async fn list_workers(pool: &PgPool, stream: Option<&str>, consumer: Option<&str>) -> Result<Vec<Worker>, Error> {
    if let Some(stream) = stream {
        match consumer {
            Some(consumer) => drop(crate::admin::get_consumer(pool, stream, consumer).await?),
            None => drop(crate::admin::get_stream(pool, stream).await?),
        }
    }
    on_pool!(pool, sqlx::query_as(sql::WORKER_LIST).bind(stream).bind(consumer), fetch_all).await.map_err(Error::db)
}

/// A client of the gateway (`sluice serve`'s `/gateway`), one per connection.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
#[non_exhaustive]
pub struct GatewayClient {
    /// The connection's id, as its `welcome` frame gave it.
    pub connection: uuid::Uuid,
    /// The key it logged in with.
    pub key_name: String,
    /// The name and version it gave, if any.
    pub client: Option<String>,
    /// The host of the gateway serving it.
    pub host: String,
    /// The gateway's process id on that host.
    pub pid: i32,
    /// When it connected.
    pub connected_at: DateTime<Utc>,
    /// The connection's last beat (every few seconds while open).
    pub seen_at: DateTime<Utc>,
    /// When it closed.
    pub disconnected_at: Option<DateTime<Utc>>,
    /// Consumers it takes tasks from.
    pub subscriptions: i32,
    /// Its credit, over every subscription.
    pub credit: i32,
    /// Tasks in its hands.
    pub in_flight: i32,
    /// `active` (tasks in its hands or credit open), `idle` (connected,
    /// neither) or `disconnected` (closed, or no beat for 30 s).
    pub status: String,
}

/// The gateway's clients: connected ones first, then those that left in
/// the last day, newest first (at most 1,000).
pub async fn list_gateway_clients(pool: &PgPool) -> Result<Vec<GatewayClient>, Error> {
    on_pool!(pool, sqlx::query_as(sql::GATEWAY_CLIENT_LIST), fetch_all).await.map_err(Error::db)
}
