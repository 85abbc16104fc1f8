//! Taking tasks from a consumer for a client: `subscribe` starts a Sluice
//! subscriber whose handlers pass each task to the client (`deliver`) and
//! wait for its `ack`, `nack` or `defer`, with the client's credit as the
//! subscriber's [`sluice::Credit`]. A task the client does not settle (nor
//! `extend`) within the settle timeout fails that attempt; the tasks of a
//! client that goes away are released at once. No path ends a handler with
//! an implicit ack: a task the client did not ack is settled as it asked,
//! released, failed, or left to its lease, never completed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sluice::{Defer, HandlerError, Message, Nack, Priority, SubscriberHandle, Subscription, TaskError, TaskState};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, warn};

use crate::keys::LoginKey;
use crate::protocol::{Code, Refusal, ServerFrame, Subscribe};
use crate::GatewayState;

/// How a client settles a task.
#[derive(Debug)]
pub(crate) enum How {
    Ack,
    Nack(Nack),
    Defer(Defer),
}

/// What settling did.
#[derive(Debug)]
pub(crate) enum Settled {
    Acked,
    Nacked(TaskState),
    Deferred(DateTime<Utc>),
}

/// A settle request for a task's handler, and where its answer goes.
pub(crate) struct Settle {
    how: How,
    reply: oneshot::Sender<Result<Settled, Refusal>>,
}

/// A task delivered to the client and not settled yet.
struct Pending {
    settle: mpsc::Sender<Settle>,
    extend: Arc<Notify>,
}

/// The tasks in the client's hands, by lease token, for every subscription
/// of one connection.
#[derive(Default, Clone)]
pub(crate) struct InHand {
    tasks: Arc<Mutex<HashMap<i64, Pending>>>,
}

impl InHand {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Pending>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every task: their handlers release them.
    pub(crate) fn drop_all(&self) {
        self.lock().clear();
    }

    /// How many tasks are in the client's hands.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Tries of a gone client's task's release before it is left to its lease.
const RELEASE_TRIES: u32 = 4;
/// The wait before the second try, doubled before each next one.
const RELEASE_BACKOFF: Duration = Duration::from_millis(100);
/// How long one try may take (a pool busy with a client dropping hundreds
/// of tasks): the tries and waits fit in the seconds a gone client's
/// subscriptions are given to stop.
const RELEASE_TRY_LIMIT: Duration = Duration::from_millis(800);
/// Why a gone client's tasks are released.
const GONE: &str = "the gateway client disconnected";

fn lease_lost(token: i64) -> Refusal {
    Refusal::new(
        Code::LeaseLost,
        format!(
            "lease token {token} holds no task on this connection (settled, expired, released or never delivered here)"
        ),
    )
}

/// Settles the task of `token` as the client asks.
pub(crate) async fn settle(in_hand: &InHand, token: i64, how: How) -> Result<Settled, Refusal> {
    let sender = in_hand.lock().get(&token).map(|p| p.settle.clone()).ok_or_else(|| lease_lost(token))?;
    let (reply, answer) = oneshot::channel();
    sender.send(Settle { how, reply }).await.map_err(|_| lease_lost(token))?;
    answer.await.map_err(|_| lease_lost(token))?
}

/// Gives the task of `token` another settle timeout.
pub(crate) fn extend(in_hand: &InHand, token: i64) -> Result<(), Refusal> {
    let tasks = in_hand.lock();
    let pending = tasks.get(&token).ok_or_else(|| lease_lost(token))?;
    pending.extend.notify_one();
    Ok(())
}

/// One consumer a client takes tasks from.
pub(crate) struct Taking {
    pub(crate) stream: String,
    pub(crate) consumer: String,
    pub(crate) credit: sluice::Credit,
    pub(crate) handle: SubscriberHandle,
}

/// What the handlers of one subscription share.
struct Ctx {
    subscription: String,
    outbound: mpsc::UnboundedSender<ServerFrame>,
    in_hand: InHand,
    settle_timeout: Duration,
}

/// Starts taking tasks from the consumer a `subscribe` names, for `key`,
/// as many at a time as its credit.
pub(crate) async fn subscribe(
    state: &GatewayState,
    key: &LoginKey,
    subscription: String,
    frame: &Subscribe,
    outbound: mpsc::UnboundedSender<ServerFrame>,
    in_hand: InHand,
) -> Result<Taking, Refusal> {
    let (stream, consumer, credit) = (frame.stream.as_str(), frame.consumer.as_str(), frame.credit);
    let invalid = |e: sluice::InvalidInput| Refusal::new(Code::Invalid, e.to_string());
    sluice::check_name("stream", stream).map_err(invalid)?;
    sluice::check_name("consumer", consumer).map_err(invalid)?;
    if !key.consume.iter().any(|c| *c == format!("{stream}/{consumer}")) {
        return Err(Refusal::new(
            Code::Forbidden,
            format!("key {:?} may not take tasks from consumer {consumer:?} of stream {stream:?}", key.name),
        ));
    }
    let limits = state.limits();
    check_credit(credit, 0, limits.max_credit)?;
    let credit = sluice::Credit::new(credit);
    let ctx = Arc::new(Ctx { subscription, outbound, in_hand, settle_timeout: limits.settle_timeout });
    let options = Subscription::new(stream, consumer)
        .concurrency(limits.max_credit)
        .credit(credit.clone())
        .fetch_limit(state.fetch_limit().clone());
    let handler = move |msg: Message<Value>| handle(ctx.clone(), msg);
    let handle = sluice::sub(state.pool(), options, handler).await.map_err(|e| match e {
        sluice::Error::StreamNotFound { .. } | sluice::Error::ConsumerNotFound { .. } => {
            Refusal::new(Code::NotFound, e.to_string())
        }
        e => Refusal::new(Code::Internal, format!("could not start taking tasks: {e}")),
    })?;
    Ok(Taking { stream: stream.to_string(), consumer: consumer.to_string(), credit, handle })
}

/// Checks that `add` more credit on top of `granted` stays within `max`.
pub(crate) fn check_credit(add: usize, granted: usize, max: usize) -> Result<(), Refusal> {
    if add == 0 {
        return Err(Refusal::new(Code::Invalid, "credit is at least 1"));
    }
    if granted.saturating_add(add) > max {
        return Err(Refusal::new(
            Code::CreditExceeded,
            format!("{granted} granted and {add} more is over {max} (max_credit); nothing changed"),
        ));
    }
    Ok(())
}

/// One task's handler: deliver it, then wait for the client.
async fn handle(ctx: Arc<Ctx>, msg: Message<Value>) -> Result<(), HandlerError> {
    let token = msg.task().lease_token;
    let (settle, mut requests) = mpsc::channel::<Settle>(1);
    let extend = Arc::new(Notify::new());
    ctx.in_hand.lock().insert(token, Pending { settle, extend: extend.clone() });
    let delivered = ctx.outbound.send(deliver_frame(&ctx.subscription, &msg));
    let result = if delivered.is_err() { release(&msg).await } else { wait(&ctx, &msg, &mut requests, &extend).await };
    ctx.in_hand.lock().remove(&token);
    result
}

async fn wait(
    ctx: &Ctx,
    msg: &Message<Value>,
    requests: &mut mpsc::Receiver<Settle>,
    extend: &Notify,
) -> Result<(), HandlerError> {
    let token = msg.task().lease_token;
    let mut deadline = Instant::now() + ctx.settle_timeout;
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(Settle { how, reply }) = request else {
                    // The connection forgot its tasks: the client is gone.
                    return release(msg).await;
                };
                match apply(msg, how).await {
                    Ok(done) => {
                        let _ = reply.send(Ok(done));
                        return Ok(());
                    }
                    Err(TaskError::LeaseLost { .. } | TaskError::AlreadySettled { .. }) => {
                        // Told lease_lost: returning must not ack it after all
                        // (an ack given up after its retries reads so too).
                        msg.leave_to_lease();
                        let _ = reply.send(Err(lease_lost(token)));
                        return Ok(());
                    }
                    // Refused or failed before anything changed: the client may try again.
                    Err(TaskError::Invalid(e)) => { let _ = reply.send(Err(Refusal::new(Code::Invalid, e.to_string()))); }
                    Err(e) => { let _ = reply.send(Err(Refusal::new(Code::Internal, format!("nothing was changed: {e}")))); }
                }
            }
            _ = extend.notified() => deadline = Instant::now() + ctx.settle_timeout,
            _ = sleep_until(deadline) => {
                let _ = ctx.outbound.send(ServerFrame::Expired { subscription: ctx.subscription.clone(), lease_token: token.to_string() });
                return Err(HandlerError::new(format!(
                    "the gateway client did not settle the task within {:?} (settle_timeout)", ctx.settle_timeout
                )));
            }
        }
    }
}

async fn apply(msg: &Message<Value>, how: How) -> Result<Settled, TaskError> {
    match how {
        How::Ack => msg.ack_batched().await.map(|()| Settled::Acked),
        How::Nack(nack) => msg.nack(nack).await.map(Settled::Nacked),
        How::Defer(defer) => msg.defer(defer).await.map(Settled::Deferred),
    }
}

/// Hands a gone client's task back, trying again (with a growing wait) when
/// the write fails. A task whose release cannot be written is left to its
/// lease: it stays running until the lease ends, then comes back; it is
/// never acked, which would complete a task nobody handled.
async fn release(msg: &Message<Value>) -> Result<(), HandlerError> {
    let mut wait = RELEASE_BACKOFF;
    for tries in 1..=RELEASE_TRIES {
        let released = match tokio::time::timeout(RELEASE_TRY_LIMIT, msg.release(GONE)).await {
            Ok(released) => released,
            // It may still have been written: the next try finds the lease
            // lost, and leaves it so.
            Err(_) => Err(TaskError::Database(timed_out())),
        };
        match released {
            Ok(()) => return Ok(()),
            // Settled, expired or released already: nothing to hand back.
            Err(TaskError::LeaseLost { .. } | TaskError::AlreadySettled { .. }) => break,
            Err(e) if tries < RELEASE_TRIES => {
                debug!(error = %e, tries, retry_in = ?wait, "could not release a task of a gone client; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(e) => warn!(
                error = %e,
                event_id = msg.id().0,
                "could not release a task of a gone client; it comes back when its lease ends"
            ),
        }
    }
    msg.leave_to_lease();
    Ok(())
}

fn timed_out() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("a release took over {RELEASE_TRY_LIMIT:?}"),
    ))
}

fn deliver_frame(subscription: &str, msg: &Message<Value>) -> ServerFrame {
    ServerFrame::Deliver {
        subscription: subscription.to_string(),
        lease_token: msg.task().lease_token.to_string(),
        stream: msg.stream().to_string(),
        consumer: msg.consumer().to_string(),
        event_id: msg.id().0,
        attempt: msg.attempt(),
        subject: msg.subject().to_string(),
        payload: msg.payload().clone(),
        metadata: msg.metadata().clone(),
        key: msg.key().map(str::to_string),
        priority: msg.priority().get(),
        created_at: msg.created_at(),
    }
}

/// A `nack`'s action and reason as the library's.
pub(crate) fn nack(action: &str, reason: Option<String>) -> Result<Nack, Refusal> {
    let nack = match action {
        "discard" => Nack::discard(reason.clone().unwrap_or_else(|| "discarded by the gateway client".into())),
        "requeue_start" => Nack::requeue_start(),
        "requeue_end" => Nack::requeue_end(),
        other => {
            return Err(Refusal::new(
                Code::Invalid,
                format!("nack action {other:?}: one of discard, requeue_start, requeue_end"),
            ))
        }
    };
    Ok(match reason {
        Some(r) => nack.reason(r),
        None => nack,
    })
}

/// A `defer`'s time (a delay or a time, exactly one), priority and reason as the library's.
pub(crate) fn defer(
    delay_ms: Option<u64>,
    until: Option<String>,
    priority: Option<i64>,
    reason: Option<String>,
) -> Result<Defer, Refusal> {
    let invalid = |m: String| Refusal::new(Code::Invalid, m);
    let mut defer = match (delay_ms, until) {
        (Some(ms), None) => Defer::by(Duration::from_millis(ms)),
        (None, Some(at)) => {
            let at = DateTime::parse_from_rfc3339(&at)
                .map_err(|e| invalid(format!("until {at:?} is not an RFC 3339 time ({e})")))?;
            Defer::until(at.with_timezone(&Utc))
        }
        _ => return Err(invalid("a defer has either `delay_ms` or `until`".to_string())),
    };
    if let Some(p) = priority {
        defer = defer.priority(Priority::new(p).map_err(|e| invalid(e.to_string()))?);
    }
    if let Some(r) = reason {
        defer = defer.reason(r);
    }
    Ok(defer)
}
