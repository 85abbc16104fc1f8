//! Sluice: a transactional task queue that lives entirely in PostgreSQL.
//!
//! Producers [`publish`] events to streams. Each consumer of a stream keeps a
//! durable position (a transaction snapshot, so no event is skipped when
//! transactions commit out of order) and gets its own task for every event
//! matching its subject filters. Subscribers ([`sub`]) claim tasks with
//! `FOR UPDATE SKIP LOCKED` and hand them to a handler; returning `Ok` acks,
//! an error retries. [`Message::ack_tx`] acks inside the caller's own
//! transaction, so a business write and the ack commit together or not at all.
//!
//! ```no_run
//! use sluice::{ConsumerOptions, HandlerError, Message, NewEvent, StreamOptions, Subscription};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
//! sluice::migrate(&pool).await?;
//! sluice::create_stream(&pool, "orders", StreamOptions::default()).await?;
//! sluice::create_consumer(&pool, "orders", "billing", ConsumerOptions::default().include(["orders.*.created"])).await?;
//!
//! let handle = sluice::sub(&pool, Subscription::new("orders", "billing"), |msg: Message<serde_json::Value>| async move {
//!     println!("{} {}", msg.subject(), msg.payload());
//!     Ok::<_, HandlerError>(())
//! })
//! .await?;
//!
//! sluice::publish(&pool, "orders", NewEvent::new("orders.eu.created", &serde_json::json!({"id": 1}))?).await?;
//! # handle.shutdown(std::time::Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```
//!
//! Sluice records [`metrics`] through the `metrics` facade and emits `tracing`
//! spans; it installs neither a recorder nor a subscriber. With the `otel`
//! feature, a publish carries its span's W3C trace context in the event's
//! metadata and the handler's span continues that trace (docs/OBSERVABILITY.md).
#![warn(missing_docs)]

mod admin;
mod changes;
mod cleanup;
mod error;
mod ids;
mod message;
pub mod metrics;
mod migrate;
mod partitions;
mod pooler;
mod publish;
mod sql;
mod stats;
mod subject;
mod subscriber;
mod tasks;
#[cfg(feature = "otel")]
mod trace_context;
mod workers;

pub use admin::{
    create_consumer, create_stream, delete_consumer, delete_stream, get_consumer, get_stream, list_consumers,
    list_streams, pause_consumer, reset_position, resume_consumer, update_consumer, update_stream, Consumer,
    ConsumerOptions, Replay, Start, Stream, StreamOptions,
};
pub use changes::{watch, Changes, NEW_STREAMS_EVERY};
pub use cleanup::{cleanup, Cleanup, CleanupReport};
pub use error::{Error, InvalidInput, MigrateError, TaskError};
pub use ids::{EventId, Priority, TaskState, WorkerId};
pub use message::{Defer, HandlerError, Message, Nack, TaskRef};
pub use migrate::{migrate, migrate_down, migration_status, MigrationStatus, Steps};
pub use partitions::{
    event_partitioning, list_event_partitions, set_event_partitioning, EventPartition, EventPartitioning,
    PartitionState, PartitioningChange,
};
pub use pooler::{pooling, set_pooling, Db, Pooling};
pub use publish::{publish, publish_batch, set_notify_interval, NewEvent, MAX_PAYLOAD_BYTES, NOTIFY_INTERVAL};
pub use stats::{
    database_health, queue_stats, storage_stats, throughput, Accuracy, ConsumerStats, DatabaseHealth, Figure, Minute,
    QueueStats, StorageStats, TableStats, XminHolder, STATS_COUNT_CAP, THROUGHPUT_KEPT_MINUTES,
};
pub use subject::{check_name, check_pattern, check_subject, subject_matches};
pub use subscriber::{
    hostname, sub, BackoffFn, Credit, FetchLimit, ShutdownReport, SubscriberEvent, SubscriberHandle, Subscription,
};
pub use tasks::{
    cancel_task, cancel_tasks, count_tasks, discard_task, discard_tasks, get_task, list_tasks, retry_task, retry_tasks,
    steer_task, steer_tasks, task_event, task_log, Event, Steered, Task, TaskAction, TaskFilter, TaskLogEntry,
    TaskPage, MAX_PAGE,
};
pub use workers::{list_gateway_clients, list_workers, GatewayClient, Worker};
