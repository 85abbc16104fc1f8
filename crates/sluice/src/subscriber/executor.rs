//! The executor: runs one handler on one claimed task — deserializes the
//! payload, enforces the handler timeout, catches panics — and decides how
//! the task is settled: an implicit ack goes to the completer, a failure is
//! recorded at once (retry after the backoff, or discard).

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use serde::de::DeserializeOwned;
use tracing::{debug, warn, Instrument};

use super::completer::Acks;
use super::fetcher::ClaimedTask;
use super::registry::Key;
use super::{is_transient, panic_message, timed, ErrorBackoff, Shared};
use crate::ids::{EventId, Priority, WorkerId};
use crate::message::{HandlerError, Message, TaskRef, ACKED, UNSETTLED};
use crate::metrics::Outcome;
use crate::pooler::on_pool;
use crate::sql;

/// How many times a failed attempt's record is tried on a connection error.
const FAIL_TRIES: u32 = 4;

pub(crate) struct Executor<T, F> {
    shared: Arc<Shared>,
    handler: Arc<F>,
    acks: Acks,
    timeout: Option<Duration>,
    _payload: PhantomData<fn() -> T>,
}

impl<T, F> Clone for Executor<T, F> {
    fn clone(&self) -> Self {
        Executor {
            shared: self.shared.clone(),
            handler: self.handler.clone(),
            acks: self.acks.clone(),
            timeout: self.timeout,
            _payload: PhantomData,
        }
    }
}

impl<T, F, Fut> Executor<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    pub(crate) fn new(shared: Arc<Shared>, handler: Arc<F>, acks: Acks, timeout: Option<Duration>) -> Self {
        Executor { shared, handler, acks, timeout, _payload: PhantomData }
    }

    /// Runs the task's handler and settles the task, in the task's span.
    pub(crate) async fn run(self, task: ClaimedTask) {
        let metadata: BTreeMap<String, String> = serde_json::from_str(&task.metadata).unwrap_or_default();
        let span = tracing::info_span!(
            "sluice.handle",
            stream = %self.shared.stream,
            consumer = %self.shared.consumer,
            event_id = task.event_id,
            attempt = task.attempt,
            outcome = tracing::field::Empty,
        );
        #[cfg(feature = "otel")]
        crate::trace_context::adopt(&span, &metadata);
        self.handle(task, metadata).instrument(span).await
    }

    async fn handle(self, task: ClaimedTask, metadata: BTreeMap<String, String>) {
        let shared = &self.shared;
        let key = task.key();
        shared.registry.start(key);
        let (event_id, attempt) = (task.event_id, task.attempt);
        let payload = match serde_json::from_str::<T>(&task.payload) {
            Ok(p) => p,
            Err(e) => {
                let error = format!(
                    "payload of event {event_id} does not deserialize into {}: {e}",
                    std::any::type_name::<T>()
                );
                warn!(event_id, %error, "discarding task");
                fail(shared, key, attempt, &error, false).await;
                shared.registry.forget(key);
                return;
            }
        };
        let settled = Arc::new(AtomicU8::new(UNSETTLED));
        let msg = Message {
            task: TaskRef {
                stream: shared.stream.clone(),
                consumer: shared.consumer.clone(),
                consumer_id: shared.consumer_id,
                event_id: EventId(event_id),
                attempt,
                lease_token: task.lease_token,
                worker_id: WorkerId(shared.worker_id),
            },
            subject: task.subject,
            payload,
            metadata,
            key: task.key,
            created_at: task.created_at,
            priority: Priority::from_db(task.priority),
            shared: shared.clone(),
            settled: settled.clone(),
            acks: self.acks.clone(),
        };
        if attempt == 1 {
            let waited = (chrono::Utc::now() - task.created_at).to_std().unwrap_or_default();
            shared.metrics.wait.record(waited.as_secs_f64());
        }
        let in_flight = shared.metrics.in_flight();
        let started = std::time::Instant::now();
        let handled = AssertUnwindSafe((self.handler)(msg)).catch_unwind();
        let outcome = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, handled).await.map_err(|_| limit),
            None => Ok(handled.await),
        };
        let took = started.elapsed();
        drop(in_flight);
        let how_it_ended = match &outcome {
            Ok(Ok(Ok(()))) => Outcome::Ok,
            Ok(Ok(Err(_))) => Outcome::Error,
            Ok(Err(_)) => Outcome::Panic,
            Err(_) => Outcome::Timeout,
        };
        shared.metrics.handled(how_it_ended, took);
        tracing::Span::current().record("outcome", how_it_ended.as_str());
        let how = settled.load(Ordering::Acquire);
        let failure = match outcome {
            Ok(Ok(Ok(()))) if how == UNSETTLED => {
                // The completer forgets the task once its ack is written.
                if !self.acks.send(key).await {
                    shared.registry.forget(key);
                }
                return;
            }
            // Settled explicitly; with a `_tx` call the caller's commit
            // decides, and if it rolled back the task comes back. Or left to
            // its lease (a nack, defer or release that failed): no ack, no
            // failure, the rescuer brings it back once the lease ends.
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some((e.message().to_string(), e.is_retryable())),
            Ok(Err(panic)) => Some((format!("handler panicked: {}", panic_message(&*panic)), true)),
            Err(limit) => Some((format!("handler timed out after {limit:?}"), true)),
        };
        if let Some((error, retry)) = failure {
            if how == ACKED {
                warn!(event_id, %error, "handler failed after settling its task; the settlement stands");
            } else {
                fail(shared, key, attempt, &error, retry).await;
            }
        }
        shared.registry.forget(key);
    }
}

/// Records a failed attempt: a retry after the backoff, or a discard. Tried
/// again on a connection error; if it still cannot be written, the task
/// comes back when its lease ends, as if the worker had died.
pub(crate) async fn fail(shared: &Shared, key: Key, attempt: i32, error: &str, retry: bool) {
    let (event_id, lease_token) = key;
    shared.metrics.failed();
    // A handler's message may hold anything; Postgres text cannot hold NUL.
    let error = error.replace('\0', "\u{FFFD}");
    let delay = shared.retry_delay(attempt).min(crate::admin::MAX_DURATION);
    let mut backoff = ErrorBackoff::new();
    for tries in 1..=FAIL_TRIES {
        let result = timed(
            shared.db_timeout,
            "recording a failed attempt",
            on_pool!(
                &shared.pool,
                sqlx::query_as::<_, (String, Option<i64>)>(sql::FAIL)
                    .bind(shared.consumer_id)
                    .bind(event_id)
                    .bind(lease_token)
                    .bind(shared.worker_id)
                    .bind(&error)
                    .bind(delay.as_millis() as i64)
                    .bind(!retry),
                fetch_optional
            ),
        )
        .await;
        match result {
            Ok(Some((state, due_in_ms))) => {
                if state == "discarded" {
                    shared.metrics.dead_lettered.increment(1);
                }
                if let Some(wait) = due_in_ms {
                    shared.scheduled_in(wait);
                }
                debug!(event_id, attempt, %state, error, "attempt failed");
                return;
            }
            Ok(None) => {
                warn!(event_id, attempt, "attempt failed after its lease was lost; nothing recorded");
                return;
            }
            Err(e) if is_transient(&e) && tries < FAIL_TRIES => {
                let wait = backoff.next();
                warn!(event_id, attempt, error = %e, retry_in = ?wait, "could not record a failed attempt; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                warn!(event_id, attempt, error = %e, "could not record a failed attempt; the task comes back when its lease ends");
                return;
            }
        }
    }
}
