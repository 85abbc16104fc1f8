//! The driver: the subscriber's loop. It keeps a bounded buffer of claimed
//! tasks, starts handlers up to the concurrency limit, runs one fetch and one
//! housekeeping run at a time beside them, and shuts everything down within
//! the deadline.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use super::completer::{self, Completed};
use super::executor::Executor;
use super::fetcher::{self, Ask, ClaimedTask, FetchError, Fetched};
use super::maintenance::{self, Maintained};
use super::notifier::Notifier;
use super::pace::Pace;
use super::registry::Key;
use super::subscription::Wakeups;
use super::{keeper, timed, ErrorBackoff, Shared, ShutdownReport, SubscriberEvent, Subscription};
use crate::error::Error;
use crate::message::{HandlerError, Message};
use crate::pooler::on_pool;
use crate::sql;

/// The part of the deadline kept for handing tasks back and flushing acks
/// after the handlers' share: a fifth, at most 2 s.
const CLEANUP_SHARE: u32 = 5;
const CLEANUP_MAX: Duration = Duration::from_secs(2);
/// The deadline of a subscriber that stops by itself.
const SELF_STOP_GRACE: Duration = Duration::from_secs(10);
/// After a notification or a fetch that found work, an empty fetch is
/// followed by this many more, 1, 2, 4 … 128 ms apart (a quarter second in
/// all), before the subscriber waits for the next notification or its poll:
/// a notification is a hint that work is arriving, and only one publish of a
/// stream in a few milliseconds carries one (`publish::NOTIFY_INTERVAL`), so
/// the events committed just after it are found by these.
const FOLLOW_UPS: u32 = 8;

pub(crate) struct Driver<T, F> {
    shared: Arc<Shared>,
    handler: Arc<F>,
    sub: Subscription,
    stop: CancellationToken,
    deadline: Arc<Mutex<Duration>>,
    failure: Arc<OnceLock<Error>>,
    _payload: std::marker::PhantomData<fn() -> T>,
}

impl<T, F, Fut> Driver<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    pub(crate) fn new(
        shared: Arc<Shared>,
        handler: Arc<F>,
        sub: Subscription,
        stop: CancellationToken,
        deadline: Arc<Mutex<Duration>>,
        failure: Arc<OnceLock<Error>>,
    ) -> Self {
        Driver { shared, handler, sub, stop, deadline, failure, _payload: std::marker::PhantomData }
    }

    pub(crate) async fn run(self) -> ShutdownReport {
        let shared = self.shared.clone();
        let helpers = CancellationToken::new();
        let channel = format!("sluice.{}", shared.stream_id);
        let topic = match &self.sub.wakeups {
            // Through a pooler in transaction mode, LISTEN would be answered
            // and never heard from again: poll.
            Wakeups::Listen if crate::pooler::in_transactions() => None,
            Wakeups::Listen => Some(Notifier::subscribe(&shared.pool.connect_options(), &channel)),
            Wakeups::ListenAt(Ok(options)) => Some(Notifier::subscribe(options, &channel)),
            // Refused when the subscription was validated.
            Wakeups::ListenAt(Err(_)) => None,
            Wakeups::PollOnly => None,
        };
        let mut pace = Pace::of(&self.sub);
        let (acks, pending_acks, given_up, completer) =
            completer::spawn(shared.clone(), self.sub.concurrency + pace.largest());
        let keeper = tokio::spawn(keeper::run(shared.clone(), self.sub.heartbeat, helpers.clone()).in_current_span());
        let executor = Executor::new(shared.clone(), self.handler.clone(), acks, self.sub.handler_timeout);

        let concurrency = self.sub.concurrency;
        let mut buffer: VecDeque<ClaimedTask> = VecDeque::with_capacity(pace.claim());
        let mut running: JoinSet<()> = JoinSet::new();
        let mut running_keys: HashMap<tokio::task::Id, Key> = HashMap::new();
        // dirty: the stream may hold events not yet materialized.
        // idle: the last fetch found nothing, so wait for news before the next.
        let mut dirty = true;
        let mut idle = false;
        // Some(n): following up on recent work, n empty fetches so far.
        let mut follow_up: Option<u32> = None;
        let mut follow_up_at: Option<Instant> = None;
        let mut pause_until: Option<Instant> = None;
        let mut errors = ErrorBackoff::new();
        let mut next_tick = Instant::now() + self.sub.poll_interval;
        let mut next_maintenance = Instant::now();
        // When a task this worker scheduled falls due: kept apart from the
        // tick, so that a housekeeping run already under way (whose reading
        // may predate the scheduling) cannot overwrite it.
        let mut due_at: Option<Instant> = None;
        // At most one fetch runs at a time, beside the handlers: while it
        // waits on the database, handlers keep starting from the buffer.
        let mut fetching: Option<JoinHandle<Result<Fetched, FetchError>>> = None;
        // How many tasks the fetch under way asked for.
        let mut asked = 0;
        let mut maintaining: Option<JoinHandle<Result<Maintained, sqlx::Error>>> = None;

        let credit = self.sub.credit.clone();
        let mut credit_changes = credit.as_ref().map(super::Credit::changes);
        loop {
            // With a credit, the tasks held (running and buffered) stay within it.
            let concurrency = credit.as_ref().map_or(concurrency, |c| c.get().min(concurrency));
            while running.len() < concurrency {
                let Some(task) = buffer.pop_front() else { break };
                let key = task.key();
                let handle = running.spawn(executor.clone().run(task).in_current_span());
                running_keys.insert(handle.id(), key);
            }
            if fetching.is_some() && buffer.is_empty() && running.len() < concurrency {
                pace.starved();
            }
            if self.stop.is_cancelled() || self.failure.get().is_some() {
                break;
            }
            if let Some(due) = shared.take_due() {
                due_at = Some(due_at.map_or(due, |d| d.min(due)));
            }
            let next_run = due_at.map_or(next_maintenance, |d| d.min(next_maintenance));
            let now = Instant::now();
            let db_ok = pause_until.is_none_or(|t| now >= t);
            // Housekeeping runs beside the handlers too, one run at a time: a
            // slow run (a lock, stale statistics) must not stall handling.
            if maintaining.is_none() && db_ok && now >= next_run {
                if due_at.is_some_and(|d| d <= now) {
                    due_at = None;
                }
                let shared = shared.clone();
                let run = async move { maintenance::run_once(&shared).await };
                maintaining = Some(tokio::spawn(run.in_current_span()));
            }
            // Fetch when a good part of a batch fits, or when handlers would idle.
            let batch = pace.claim();
            let prefetch = if credit.is_some() { 0 } else { self.sub.prefetch.unwrap_or(batch) };
            let room = (concurrency + prefetch).saturating_sub(running.len() + buffer.len());
            let worth_it = match credit {
                None => room >= (batch / 2).max(1) || (room > 0 && buffer.is_empty()),
                // With a credit (no prefetch), a task settled frees one place:
                // claiming one at a time would cost a round trip each. Wait
                // for a quarter of the credit, unless nothing is in hand or
                // there is news (a notification, a follow-up, the poll, a
                // change of credit): a task released or requeued while this
                // subscriber had less room than that must not wait for two
                // settles that may never come (issue 23). So a place freed by
                // a settle waits at most for the next poll.
                Some(_) => {
                    room >= (concurrency / 4).clamp(1, (batch / 2).max(1))
                        || (room > 0 && ((buffer.is_empty() && running.is_empty()) || dirty))
                }
            };
            if fetching.is_none() && db_ok && worth_it && (dirty || !idle) {
                let ask = Ask {
                    tasks: room.min(batch),
                    chunk: self.sub.refill_chunk,
                    max_bytes: self.sub.max_batch_bytes,
                    refill: dirty,
                };
                asked = ask.tasks;
                let shared = shared.clone();
                let limit = self.sub.fetch_limit.clone();
                let run = async move {
                    // In turn with the subscribers sharing the limit: the
                    // wait holds no pool connection.
                    let _turn = match &limit {
                        Some(limit) => Some(limit.turn().await),
                        None => None,
                    };
                    fetcher::fetch(&shared, ask).await
                };
                fetching = Some(tokio::spawn(run.in_current_span()));
                dirty = false;
            }

            let pause = pause_until.unwrap_or(next_tick);
            tokio::select! {
                _ = self.stop.cancelled() => {}
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                    running_keys.remove(&id);
                }
                result = async { fetching.as_mut().expect("guarded").await }, if fetching.is_some() => {
                    fetching = None;
                    let result = result.unwrap_or_else(|e| {
                        Err(FetchError::Db(sqlx::Error::Protocol(format!("fetch task failed: {e}"))))
                    });
                    match result {
                        Ok(fetched) => {
                            errors.reset();
                            pace.fetched(asked, fetched.tasks.len(), buffer.len());
                            if fetched.busy {
                                // The consumer's row is held (not by a refill,
                                // which it would have waited for): look again shortly.
                                dirty = true;
                                pause_until = Some(Instant::now() + Duration::from_millis(5));
                            }
                            dirty |= fetched.more;
                            idle = fetched.tasks.is_empty() && !dirty;
                            if !fetched.tasks.is_empty() {
                                follow_up = Some(0);
                            } else if idle {
                                if fetched.materialized > 0 {
                                    // Tasks made but none claimed: the keys of an
                                    // ordered consumer held back while a window was
                                    // read move on at the next refill. Follow up as
                                    // after work, not at the next poll.
                                    follow_up = Some(0);
                                }
                                follow_up = match follow_up {
                                    Some(n) if n < FOLLOW_UPS => {
                                        follow_up_at = Some(Instant::now() + Duration::from_millis(1 << n));
                                        Some(n + 1)
                                    }
                                    _ => None,
                                };
                            }
                            shared.emit(SubscriberEvent::Fetched {
                                claimed: fetched.tasks.len(),
                                materialized: fetched.materialized,
                            });
                            shared.registry.hold(fetched.tasks.iter().map(ClaimedTask::key));
                            buffer.extend(fetched.tasks);
                        }
                        Err(FetchError::Stop(e)) => {
                            error!(error = %e, "subscriber stopping: it cannot go on");
                            let _ = self.failure.set(e);
                        }
                        Err(FetchError::Db(e)) => {
                            let wait = errors.next();
                            warn!(error = %e, retry_in = ?wait, "fetching tasks failed");
                            dirty = true;
                            pause_until = Some(Instant::now() + wait);
                        }
                    }
                }
                result = async { maintaining.as_mut().expect("guarded").await }, if maintaining.is_some() => {
                    maintaining = None;
                    next_maintenance = Instant::now() + self.sub.poll_interval;
                    let result = result.unwrap_or_else(|e| Err(sqlx::Error::Protocol(format!("housekeeping task failed: {e}"))));
                    match result {
                        Ok(done) => {
                            if done.freed {
                                // Tasks came back (due, or rescued): look at once,
                                // polling only or not, whatever room is left.
                                dirty = true;
                                idle = false;
                            }
                            if done.more {
                                next_maintenance = Instant::now();
                            } else if let Some(wait) = done.next_due {
                                // Wake for the next scheduled task rather than a tick later.
                                next_maintenance = next_maintenance.min(Instant::now() + wait + Duration::from_millis(5));
                            }
                        }
                        Err(e) => warn!(error = %e, "housekeeping failed"),
                    }
                }
                _ = async { topic.as_ref().expect("guarded").notified().await }, if topic.is_some() => {
                    dirty = true;
                    idle = false;
                    follow_up = Some(0);
                    follow_up_at = None;
                }
                _ = shared.keys_freed.notified(), if shared.ordered_by_key => {
                    dirty = true;
                    idle = false;
                }
                _ = sleep_until(follow_up_at.unwrap_or(next_tick)), if follow_up_at.is_some() => {
                    follow_up_at = None;
                    dirty = true;
                    idle = false;
                }
                _ = sleep_until(next_tick) => {
                    dirty = true;
                    idle = false;
                    next_tick = Instant::now() + self.sub.poll_interval;
                }
                _ = async { credit_changes.as_mut().expect("guarded").changed().await }, if credit_changes.is_some() => {
                    // More room, perhaps: worth a look even below a quarter of the credit.
                    dirty = true;
                    idle = false;
                }
                _ = sleep_until(pause), if pause_until.is_some() => { pause_until = None; }
                _ = sleep_until(next_run), if pause_until.is_none() && maintaining.is_none() => {}
            }
        }

        // Shutdown: every step within the deadline.
        shared.stopping.store(true, Ordering::Relaxed);
        let grace = if self.stop.is_cancelled() {
            *self.deadline.lock().expect("deadline poisoned")
        } else {
            // Stopped by itself (its consumer is gone, its position is foreign).
            SELF_STOP_GRACE
        };
        let deadline = Instant::now() + grace;
        // Handlers get the deadline but a reserve; handing back and flushing
        // get all but the last quarter of it, which is the unregistering's.
        let reserve = (grace / CLEANUP_SHARE).min(CLEANUP_MAX);
        let handlers_until = deadline - reserve;
        let cleanup_until = deadline - reserve / 4;
        let mut report = ShutdownReport::default();
        let given_up_before = given_up.load(Ordering::Acquire);

        if let Some(handle) = maintaining.take() {
            handle.abort();
            let _ = handle.await;
        }
        // A fetch under way may have claimed tasks: take them, to hand back.
        if let Some(mut handle) = fetching.take() {
            match timeout_at(handlers_until, &mut handle).await {
                Ok(Ok(Ok(fetched))) => {
                    shared.registry.hold(fetched.tasks.iter().map(ClaimedTask::key));
                    buffer.extend(fetched.tasks);
                }
                Ok(_) => {}
                Err(_) => {
                    // Whatever it claimed goes back once its lease ends.
                    handle.abort();
                    let _ = handle.await;
                }
            }
        }
        let unstarted: Vec<Key> = buffer.drain(..).map(|t| t.key()).collect();
        let (released, abandoned) = self.release(&unstarted, cleanup_until).await;
        report.released += released;
        report.abandoned += abandoned;

        loop {
            tokio::select! {
                // Finished handlers first: one that ended in time is not aborted.
                biased;
                done = running.join_next_with_id() => match done {
                    None => break,
                    Some(done) => {
                        let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                        running_keys.remove(&id);
                        report.completed += 1;
                    }
                },
                _ = sleep_until(handlers_until) => break,
            }
        }
        running.abort_all();
        // A handler that finished just before the abort counts as completed
        // (its ack may be queued); only the cancelled ones are handed back.
        while let Some(done) = running.join_next_with_id().await {
            if let Ok((id, ())) = done {
                running_keys.remove(&id);
                report.completed += 1;
            }
        }
        let stopped: Vec<Key> = running_keys.into_values().collect();
        let (released, abandoned) = self.release(&stopped, cleanup_until).await;
        report.aborted += released;
        report.abandoned += abandoned;

        // Every executor is gone, so the completer ends once its queue is written.
        drop(executor);
        let mut completer = completer;
        match timeout_at(cleanup_until, &mut completer).await {
            Ok(Ok(Completed { given_up, .. })) => report.abandoned += given_up.saturating_sub(given_up_before),
            Ok(Err(_)) => {}
            Err(_) => {
                completer.abort();
                let _ = completer.await;
                let left = pending_acks.load(Ordering::Acquire);
                warn!(left, "acks not flushed before the deadline; those tasks run again");
                report.abandoned += left;
            }
        }
        helpers.cancel();
        // A beat under way may wait on the database: not past the deadline.
        let mut keeper = keeper;
        if timeout_at(cleanup_until, &mut keeper).await.is_err() {
            keeper.abort();
            let _ = keeper.await;
        }
        drop(topic);
        // What is left running under this worker is what the rescuer will
        // free: counted in the database, which also sees the tasks of acks
        // given up before the shutdown and of a fetch cut off by it.
        // Half of the last quarter, the unregistering's, at most.
        let count_until = cleanup_until + (deadline - cleanup_until) / 2;
        if let Ok(Ok(left)) = timeout_at(count_until, keeper::held(&shared)).await {
            report.abandoned = usize::try_from(left).unwrap_or(usize::MAX);
        }
        match timeout_at(deadline, keeper::unregister(&shared)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not unregister the worker; it is forgotten once taken for dead"),
            Err(_) => warn!("no time left to unregister the worker; it is forgotten once taken for dead"),
        }
        shared.emit(SubscriberEvent::Stopped);
        info!(
            completed = report.completed,
            released = report.released,
            aborted = report.aborted,
            abandoned = report.abandoned,
            "subscriber stopped"
        );
        report
    }

    /// Hands tasks back to the queue before `deadline`; returns (released,
    /// abandoned). A task whose handler never started gets its attempt back.
    async fn release(&self, keys: &[Key], deadline: Instant) -> (usize, usize) {
        if keys.is_empty() {
            return (0, 0);
        }
        let shared = &self.shared;
        let events: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let tokens: Vec<i64> = keys.iter().map(|k| k.1).collect();
        let started: Vec<bool> = keys.iter().map(|k| shared.registry.started(*k)).collect();
        let limit = deadline.saturating_duration_since(Instant::now()).min(shared.db_timeout);
        let result = timed(
            limit,
            "handing tasks back",
            on_pool!(
                &shared.pool,
                sqlx::query_as::<_, (i64, i64, i64)>(sql::RELEASE)
                    // Planned for each call's own arrays, as the ack is (see ack_tasks).
                    .persistent(false)
                    .bind(shared.consumer_id)
                    .bind(&events)
                    .bind(&tokens)
                    .bind(shared.worker_id)
                    .bind(&started)
                    .bind(None::<&str>),
                fetch_one
            ),
        )
        .await;
        shared.registry.forget_all(keys);
        match result {
            Ok((n, discarded, _)) => {
                shared.metrics.dead_lettered.increment(discarded as u64);
                debug!(released = n, discarded, "handed tasks back");
                // The others were settled meanwhile or had lost their lease.
                (n as usize, 0)
            }
            Err(e) => {
                warn!(error = %e, "could not hand tasks back; they come back once this worker is taken for dead");
                (0, keys.len())
            }
        }
    }
}
