//! What happens when work does not simply succeed: nack, defer, priority,
//! retries and dead letters, leases, cancel and retry by hand.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use sluice::{
    cancel_task, create_consumer, create_stream, get_task, publish, publish_batch, retry_task, sub, task_log,
    ConsumerOptions, Defer, Error, EventId, HandlerError, InvalidInput, Message, Nack, NewEvent, Priority,
    StreamOptions, Subscription, TaskState,
};
use support::{wait_until, TestDb};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(db: &TestDb, options: ConsumerOptions) {
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", options).await.unwrap();
}

fn fast() -> ConsumerOptions {
    ConsumerOptions::default().backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// One worker, one task at a time, nothing prefetched: handler order is claim order.
fn serial() -> Subscription {
    Subscription::new("jobs", "c").concurrency(1).batch_size(1).prefetch(0).poll_interval(Duration::from_millis(100))
}

fn job(n: i64) -> NewEvent {
    NewEvent::new("jobs.run", &json!({ "n": n })).unwrap()
}

fn n_of(msg: &Message<Value>) -> i64 {
    msg.payload()["n"].as_i64().unwrap()
}

type Log<T> = Arc<Mutex<Vec<T>>>;

/// The task's state, or None before it is materialized.
async fn state_of(db: &TestDb, id: EventId) -> Option<TaskState> {
    match get_task(&db.pool, "jobs", "c", id).await {
        Ok(task) => Some(task.state),
        Err(Error::TaskNotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn nack_discards_or_requeues_at_the_start_or_the_end() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let ids = publish_batch(&db.pool, "jobs", (1..=5).map(job)).await.unwrap();
    let order: Log<i64> = Arc::default();
    let o = order.clone();
    let h = sub(&db.pool, serial(), move |msg: Message<Value>| {
        let o = o.clone();
        async move {
            let n = n_of(&msg);
            o.lock().unwrap().push(n);
            match (n, msg.attempt()) {
                (1, 1) => drop(msg.nack(Nack::requeue_end().reason("later")).await?),
                (2, 1) => drop(msg.nack(Nack::requeue_start().reason("again")).await?),
                (3, _) => drop(msg.nack(Nack::discard("malformed")).await?),
                _ => {}
            }
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    wait_until(WAIT, "seven deliveries", || async { order.lock().unwrap().len() == 7 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.shutdown(Duration::from_secs(5)).await;

    // start = next to be claimed; end = after everything queued then.
    assert_eq!(*order.lock().unwrap(), vec![1, 2, 2, 3, 4, 5, 1]);
    let dead = get_task(&db.pool, "jobs", "c", ids[2]).await.unwrap();
    assert_eq!(dead.state, TaskState::Discarded);
    assert_eq!(dead.errors[0]["error"], "malformed");
    let actions = |id| {
        let pool = db.pool.clone();
        async move {
            task_log(&pool, "jobs", "c", id)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.action, e.reason))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(actions(ids[0]).await, vec![("requeued_end".to_string(), Some("later".to_string()))]);
    assert_eq!(actions(ids[1]).await, vec![("requeued_start".to_string(), Some("again".to_string()))]);
    assert_eq!(actions(ids[2]).await, vec![("discarded".to_string(), Some("malformed".to_string()))]);
}

#[tokio::test]
async fn requeues_count_as_attempts_at_the_start_and_at_the_end() {
    let db = TestDb::new().await;
    setup(&db, fast().max_attempts(3)).await;
    let ids = publish_batch(&db.pool, "jobs", [job(1), job(2)]).await.unwrap();
    let seen: Log<(i64, i32)> = Arc::default();
    let s = seen.clone();
    let h = sub(&db.pool, serial(), move |msg: Message<Value>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push((n_of(&msg), msg.attempt()));
            let nack = if n_of(&msg) == 1 { Nack::requeue_start() } else { Nack::requeue_end() };
            msg.nack(nack).await?;
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    wait_until(WAIT, "both tasks dead-lettered", || async {
        state_of(&db, ids[0]).await == Some(TaskState::Discarded)
            && state_of(&db, ids[1]).await == Some(TaskState::Discarded)
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    let seen = seen.lock().unwrap().clone();
    for n in [1, 2] {
        let attempts: Vec<i32> = seen.iter().filter(|(m, _)| *m == n).map(|(_, a)| *a).collect();
        assert_eq!(attempts, vec![1, 2, 3], "task {n}: exactly max_attempts deliveries");
    }
    for id in &ids {
        let log = task_log(&db.pool, "jobs", "c", *id).await.unwrap();
        assert_eq!(log.last().unwrap().action, "discarded");
        assert_eq!(log.len(), 3);
    }
}

#[tokio::test]
async fn deferred_task_waits_until_due_then_jumps_ahead_with_its_new_priority() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let deferred = publish(&db.pool, "jobs", NewEvent::new("jobs.defer", &json!({"n": 0})).unwrap()).await.unwrap();
    publish_batch(&db.pool, "jobs", (1..=60).map(job)).await.unwrap();

    #[derive(Default)]
    struct Seen {
        due: Option<chrono::DateTime<Utc>>,
        redelivered: Option<(chrono::DateTime<Utc>, Priority, usize)>,
        plain: usize,
    }
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s = seen.clone();
    let h = sub(&db.pool, serial(), move |msg: Message<Value>| {
        let s = s.clone();
        async move {
            if msg.subject() == "jobs.defer" {
                if msg.attempt() == 1 {
                    let due = msg
                        .defer(
                            Defer::by(Duration::from_secs(2))
                                .priority(Priority::HIGHEST)
                                .reason("downstream unavailable"),
                        )
                        .await?;
                    s.lock().unwrap().due = Some(due);
                } else {
                    let mut s = s.lock().unwrap();
                    let plain = s.plain;
                    s.redelivered = Some((Utc::now(), msg.priority(), plain));
                }
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                s.lock().unwrap().plain += 1;
            }
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    wait_until(WAIT, "the deferred task's second delivery", || async { seen.lock().unwrap().redelivered.is_some() })
        .await;
    h.shutdown(Duration::from_secs(5)).await;

    let (due, (at, priority, plain_before)) = {
        let seen = seen.lock().unwrap();
        (seen.due.unwrap(), seen.redelivered.unwrap())
    };
    assert!(at >= due, "delivered at {at}, due at {due}");
    assert_eq!(priority, Priority::HIGHEST);
    assert!(plain_before < 60, "it came back before the priority-1 tasks still queued ({plain_before} of 60 done)");
    let log = task_log(&db.pool, "jobs", "c", deferred).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].action, "deferred");
    assert_eq!(log[0].reason.as_deref(), Some("downstream unavailable"));
    assert_eq!(log[0].priority, Some(5));
    assert!(log[0].worker_id.is_some());
    assert_eq!(log[0].schedule_at, Some(due));
}

#[tokio::test]
async fn tasks_are_claimed_by_priority_then_position() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let events: Vec<NewEvent> = (0..100).map(|i| job(i).priority(Priority::new(1 + (i * 7919 % 5)).unwrap())).collect();
    publish_batch(&db.pool, "jobs", events).await.unwrap();
    let order: Log<(u8, i64)> = Arc::default();
    let o = order.clone();
    let h = sub(&db.pool, serial().batch_size(10), move |msg: Message<Value>| {
        let o = o.clone();
        async move {
            o.lock().unwrap().push((msg.priority().get(), msg.id().0));
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    wait_until(WAIT, "100 tasks", || async { order.lock().unwrap().len() == 100 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let order = order.lock().unwrap().clone();
    let mut expected = order.clone();
    expected.sort_by_key(|&(p, id)| (std::cmp::Reverse(p), id));
    assert_eq!(order, expected);
    assert_eq!(order.first().unwrap().0, 5);
    assert_eq!(order.last().unwrap().0, 1);
}

#[tokio::test]
async fn scheduled_delivery_waits_for_deliver_at() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let due = Utc::now() + chrono::TimeDelta::milliseconds(1500);
    let seen: Log<chrono::DateTime<Utc>> = Arc::default();
    let s = seen.clone();
    let h = sub(&db.pool, serial(), move |_msg: Message<Value>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(Utc::now());
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    let id = publish(&db.pool, "jobs", job(1).deliver_at(due)).await.unwrap();
    wait_until(WAIT, "the task materialized", || async {
        get_task(&db.pool, "jobs", "c", id).await.is_ok_and(|t| t.state == TaskState::Scheduled)
    })
    .await;
    wait_until(WAIT, "the delivery", || async { !seen.lock().unwrap().is_empty() }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert!(seen.lock().unwrap()[0] >= due);
}

/// Runs one event through a handler until its task is completed or discarded; returns the task.
async fn run_one<F, Fut>(db: &TestDb, options: ConsumerOptions, subscription: Subscription, handler: F) -> sluice::Task
where
    F: Fn(Message<Value>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    setup(db, options.completed_retention(Duration::from_secs(3600))).await;
    let h = sub(&db.pool, subscription, handler).await.unwrap();
    let id = publish(&db.pool, "jobs", job(1)).await.unwrap();
    wait_until(WAIT, "the task to finish", || async {
        matches!(state_of(db, id).await, Some(TaskState::Completed | TaskState::Discarded))
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    get_task(&db.pool, "jobs", "c", id).await.unwrap()
}

#[tokio::test]
async fn failing_twice_then_succeeding_completes_at_attempt_three_with_two_errors() {
    let db = TestDb::new().await;
    let task = run_one(&db, fast(), serial(), |msg: Message<Value>| async move {
        if msg.attempt() < 3 {
            return Err(HandlerError::new(format!("boom {}", msg.attempt())));
        }
        Ok(())
    })
    .await;
    assert_eq!(task.state, TaskState::Completed);
    assert_eq!(task.attempt, 3);
    let errors: Vec<&str> = task.errors.iter().map(|e| e["error"].as_str().unwrap()).collect();
    assert_eq!(errors, ["boom 1", "boom 2"]);
}

#[tokio::test]
async fn always_failing_is_discarded_after_max_attempts_with_every_error() {
    let db = TestDb::new().await;
    let task = run_one(&db, fast().max_attempts(3), serial(), |msg: Message<Value>| async move {
        Err(HandlerError::new(format!("failure {}", msg.attempt())))
    })
    .await;
    assert_eq!(task.state, TaskState::Discarded);
    assert_eq!(task.attempt, 3);
    let errors: Vec<(i64, &str)> =
        task.errors.iter().map(|e| (e["attempt"].as_i64().unwrap(), e["error"].as_str().unwrap())).collect();
    assert_eq!(errors, [(1, "failure 1"), (2, "failure 2"), (3, "failure 3")]);
    assert!(task.finished_at.is_some());
}

#[tokio::test]
async fn a_do_not_retry_error_discards_at_once() {
    let db = TestDb::new().await;
    let task = run_one(&db, fast(), serial(), |_msg: Message<Value>| async move {
        Err(HandlerError::discard("the order no longer exists"))
    })
    .await;
    assert_eq!(task.state, TaskState::Discarded);
    assert_eq!(task.attempt, 1);
    assert_eq!(task.errors.len(), 1);
    assert_eq!(task.errors[0]["error"], "the order no longer exists");
}

#[tokio::test]
async fn a_panicking_handler_is_a_failed_attempt_and_the_worker_survives() {
    let db = TestDb::new().await;
    let task = run_one(&db, fast(), serial(), |msg: Message<Value>| async move {
        if msg.attempt() == 1 {
            panic!("kaboom");
        }
        Ok(())
    })
    .await;
    assert_eq!(task.state, TaskState::Completed);
    assert_eq!(task.attempt, 2);
    assert_eq!(task.errors[0]["error"], "handler panicked: kaboom");
}

#[tokio::test]
async fn the_default_backoff_is_exponential_with_jitter() {
    let db = TestDb::new().await;
    let options =
        ConsumerOptions::default().backoff(Duration::from_millis(100), Duration::from_secs(10)).max_attempts(4);
    let task =
        run_one(&db, options, serial(), |_msg: Message<Value>| async move { Err(HandlerError::new("no")) }).await;
    assert_eq!(task.state, TaskState::Discarded);
    let log = task_log(&db.pool, "jobs", "c", task.event_id).await.unwrap();
    let delays: Vec<i64> = log
        .iter()
        .filter(|e| e.action == "failed")
        .map(|e| (e.schedule_at.unwrap() - e.created_at).num_milliseconds())
        .collect();
    assert_eq!(delays.len(), 3, "{log:?}");
    for (i, d) in delays.iter().enumerate() {
        let full = 100 * 2i64.pow(i as u32);
        assert!((full / 2..=full).contains(d), "retry {} waited {d} ms, expected {}..={full}", i + 1, full / 2);
    }
}

#[tokio::test]
async fn a_backoff_function_in_code_replaces_the_consumer_backoff() {
    let db = TestDb::new().await;
    let subscription = serial().backoff(|attempt| Duration::from_millis(300 * attempt as u64));
    let task = run_one(&db, fast().max_attempts(3), subscription, |_msg: Message<Value>| async move {
        Err(HandlerError::new("no"))
    })
    .await;
    let log = task_log(&db.pool, "jobs", "c", task.event_id).await.unwrap();
    let delays: Vec<i64> = log
        .iter()
        .filter(|e| e.action == "failed")
        .map(|e| (e.schedule_at.unwrap() - e.created_at).num_milliseconds())
        .collect();
    assert_eq!(delays, [300, 600]);
}

#[tokio::test]
async fn a_handler_longer_than_its_lease_is_not_redelivered_while_its_worker_lives() {
    let db = TestDb::new().await;
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let subscription = serial().lease(Duration::from_secs(1));
    let task = run_one(&db, fast(), subscription, move |_msg: Message<Value>| {
        let c = c.clone();
        async move {
            *c.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(())
        }
    })
    .await;
    assert_eq!(task.state, TaskState::Completed);
    assert_eq!(task.attempt, 1);
    assert_eq!(*calls.lock().unwrap(), 1);
    assert!(task.errors.is_empty());
}

#[tokio::test]
async fn bad_input_to_nack_and_defer_gets_typed_errors_and_changes_nothing() {
    assert!(matches!(Priority::new(0), Err(InvalidInput::Priority(0))));
    assert!(matches!(Priority::new(6), Err(InvalidInput::Priority(6))));
    assert!(Priority::new(0).unwrap_err().to_string().contains("1 (lowest) to 5 (highest)"));

    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let outcomes: Log<String> = Arc::default();
    let o = outcomes.clone();
    let pool = db.pool.clone();
    let h = sub(&db.pool, serial(), move |msg: Message<Value>| {
        let o = o.clone();
        let pool = pool.clone();
        async move {
            let before = get_task(&pool, "jobs", "c", msg.id()).await.unwrap();
            // A time in the past is a negative delay.
            let e = msg.defer(Defer::until(Utc::now() - chrono::TimeDelta::seconds(5))).await.unwrap_err();
            o.lock().unwrap().push(format!("past: {e:?}"));
            // A stale hold (an earlier lease) holds nothing.
            let mut stale = msg.task().clone();
            stale.lease_token -= 1;
            let e = stale.defer(&pool, Defer::by(Duration::from_secs(1))).await.unwrap_err();
            o.lock().unwrap().push(format!("stale: {e:?}"));
            let e = stale.nack(&pool, Nack::discard("x")).await.unwrap_err();
            o.lock().unwrap().push(format!("stale nack: {e:?}"));
            let after = get_task(&pool, "jobs", "c", msg.id()).await.unwrap();
            o.lock().unwrap().push(format!("unchanged: {}", before == after));
            // Settled once; a second settle is refused.
            msg.ack().await?;
            let e = msg.defer(Defer::by(Duration::from_secs(1))).await.unwrap_err();
            o.lock().unwrap().push(format!("after ack: {e:?}"));
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    publish(&db.pool, "jobs", job(1)).await.unwrap();
    wait_until(WAIT, "the handler", || async { outcomes.lock().unwrap().len() == 5 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let outcomes = outcomes.lock().unwrap().clone();
    assert!(outcomes[0].starts_with("past: Invalid(Setting { setting: \"defer\""), "{}", outcomes[0]);
    assert!(outcomes[1].starts_with("stale: LeaseLost"), "{}", outcomes[1]);
    assert!(outcomes[2].starts_with("stale nack: LeaseLost"), "{}", outcomes[2]);
    assert_eq!(outcomes[3], "unchanged: true");
    assert!(outcomes[4].starts_with("after ack: AlreadySettled"), "{}", outcomes[4]);
    let log: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.task_log").fetch_one(&db.pool).await.unwrap();
    assert_eq!(log, 0, "nothing was logged");
}

#[tokio::test]
async fn cancel_and_retry_by_hand() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let later = Utc::now() + chrono::TimeDelta::hours(1);
    let id = publish(&db.pool, "jobs", job(1).deliver_at(later)).await.unwrap();
    let seen: Log<(i64, i32)> = Arc::default();
    let s = seen.clone();
    let h = sub(&db.pool, serial(), move |msg: Message<Value>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push((msg.id().0, msg.attempt()));
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    wait_until(WAIT, "the scheduled task", || async { get_task(&db.pool, "jobs", "c", id).await.is_ok() }).await;

    cancel_task(&db.pool, "jobs", "c", id, Some("customer withdrew")).await.unwrap();
    assert_eq!(state_of(&db, id).await, Some(TaskState::Cancelled));
    let e = cancel_task(&db.pool, "jobs", "c", id, None).await.unwrap_err();
    assert!(matches!(&e, Error::TaskState { state: TaskState::Cancelled, action: "cancel", .. }), "{e:?}");
    assert!(e.to_string().contains("it is cancelled"), "{e}");

    retry_task(&db.pool, "jobs", "c", id, Some("customer came back")).await.unwrap();
    wait_until(WAIT, "the retried task", || async { !seen.lock().unwrap().is_empty() }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*seen.lock().unwrap(), vec![(id.0, 1)], "attempts start again at 1");

    let e = retry_task(&db.pool, "jobs", "c", EventId(id.0 + 1000), None).await.unwrap_err();
    assert!(matches!(&e, Error::TaskNotFound { .. }), "{e:?}");
    let e = cancel_task(&db.pool, "jobs", "nope", id, None).await.unwrap_err();
    assert!(matches!(&e, Error::ConsumerNotFound { .. }), "{e:?}");
    let log: Vec<(String, Option<String>)> =
        task_log(&db.pool, "jobs", "c", id).await.unwrap().into_iter().map(|e| (e.action, e.reason)).collect();
    assert_eq!(
        log,
        vec![
            ("cancelled".to_string(), Some("customer withdrew".to_string())),
            ("retried".to_string(), Some("customer came back".to_string()))
        ]
    );

    // A running or available task cannot be retried by hand; nothing changes.
    let id2 = publish(&db.pool, "jobs", job(2).deliver_at(later)).await.unwrap();
    let h = sub(&db.pool, serial(), |_m: Message<Value>| async { Ok(()) }).await.unwrap();
    wait_until(WAIT, "the second task", || async { get_task(&db.pool, "jobs", "c", id2).await.is_ok() }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let before = get_task(&db.pool, "jobs", "c", id2).await.unwrap();
    let e = retry_task(&db.pool, "jobs", "c", id2, None).await.unwrap_err();
    assert!(matches!(&e, Error::TaskState { state: TaskState::Scheduled, action: "retry", .. }), "{e:?}");
    assert_eq!(get_task(&db.pool, "jobs", "c", id2).await.unwrap(), before);
}

#[tokio::test]
async fn workers_register_heartbeat_and_unregister() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let h = sub(
        &db.pool,
        serial().heartbeat(Duration::from_millis(200)).dead_after(Duration::from_secs(2)),
        |_m: Message<Value>| async { Ok(()) },
    )
    .await
    .unwrap();
    let row = || async {
        sqlx::query_as::<_, (uuid::Uuid, i32, String, chrono::DateTime<Utc>, chrono::DateTime<Utc>)>(
            "SELECT id, pid, status::text, started_at, heartbeat_at FROM sluice.workers",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    let first = row().await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, h.worker_id().0);
    assert_eq!(first[0].1, std::process::id() as i32);
    wait_until(WAIT, "a heartbeat reporting idle", || async {
        let now = row().await;
        now[0].2 == "idle" && now[0].4 > first[0].4
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
    assert!(row().await.is_empty());
}

#[tokio::test]
async fn an_event_with_an_unknown_consumer_task_reports_not_found() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let e = get_task(&db.pool, "jobs", "c", EventId(42)).await.unwrap_err();
    assert_eq!(e.to_string(), "consumer \"c\" of stream \"jobs\" has no task for event 42");
    let e = sub(&db.pool, serial().lease(Duration::from_millis(10)), |_m: Message<Value>| async { Ok(()) })
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Invalid(InvalidInput::Setting { setting: "lease", .. })), "{e:?}");
}

#[tokio::test]
async fn retries_and_deferrals_run_when_due_not_at_the_next_poll() {
    let db = TestDb::new().await;
    // A poll interval far longer than the wait below: only the wake-up for the
    // due time can bring the task back in time.
    let subscription = serial().poll_interval(Duration::from_secs(60));
    let task = run_one(&db, fast(), subscription, |msg: Message<Value>| async move {
        match msg.attempt() {
            1 => Err(HandlerError::new("retry me")),
            2 => {
                msg.defer(Defer::by(Duration::from_millis(200))).await?;
                Ok(())
            }
            _ => Ok(()),
        }
    })
    .await;
    assert_eq!(task.state, TaskState::Completed);
    assert_eq!(task.attempt, 3);
}

async fn count_in(db: &TestDb, state: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sluice.tasks WHERE state::text = $1")
        .bind(state)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// A credit bounds the tasks a subscriber holds, whatever its concurrency;
/// raising it lets the subscriber claim more at once.
#[tokio::test]
async fn a_credit_bounds_the_tasks_held_and_raising_it_claims_more() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    publish_batch(&db.pool, "jobs", (0..20).map(job)).await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let credit = sluice::Credit::new(3);
    let handler = {
        let gate = gate.clone();
        move |_: Message<Value>| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, HandlerError>(())
            }
        }
    };
    let subscription = Subscription::new("jobs", "c").concurrency(16).credit(credit.clone());
    let h = sub(&db.pool, subscription, handler).await.unwrap();
    wait_until(WAIT, "3 tasks held", || async { count_in(&db, "running").await == 3 }).await;
    // More events and their wake-up change nothing while the credit is used up.
    publish_batch(&db.pool, "jobs", (20..25).map(job)).await.unwrap();
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < watch_until {
        assert_eq!(count_in(&db, "running").await, 3, "never more than the credit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    credit.add(4);
    wait_until(WAIT, "7 tasks held once the credit rose", || async { count_in(&db, "running").await == 7 }).await;
    gate.add_permits(25);
    wait_until(WAIT, "every task done", || async {
        count_in(&db, "available").await + count_in(&db, "running").await == 0
    })
    .await;
    h.shutdown(Duration::from_secs(5)).await;
}

/// `Message::release` hands a task back at once, not after its lease, and
/// not as a failure: no error recorded, no backoff, logged with its reason.
#[tokio::test]
async fn a_released_task_comes_back_at_once_without_a_failure() {
    let db = TestDb::new().await;
    setup(&db, fast().lease(Duration::from_secs(120)).max_attempts(2)).await;
    let id = publish(&db.pool, "jobs", job(1)).await.unwrap();
    let seen: Log<(i32, String)> = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |msg: Message<Value>| {
            let seen = seen.clone();
            async move {
                if msg.attempt() == 1 {
                    msg.release("client went away").await.unwrap();
                    let twice = msg.release("again").await.unwrap_err();
                    seen.lock().unwrap().push((msg.attempt(), twice.to_string()));
                } else {
                    seen.lock().unwrap().push((msg.attempt(), "handled".into()));
                }
                Ok::<_, HandlerError>(())
            }
        }
    };
    let h = sub(&db.pool, serial(), handler).await.unwrap();
    wait_until(WAIT, "handled on the second attempt", || async { seen.lock().unwrap().len() == 2 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[1], (2, "handled".to_string()), "{seen:?}");
    assert!(seen[0].1.contains("settled"), "a task is released once: {seen:?}");
    let log = task_log(&db.pool, "jobs", "c", id).await.unwrap();
    let actions: Vec<(&str, Option<&str>)> = log.iter().map(|e| (e.action.as_str(), e.reason.as_deref())).collect();
    assert!(actions.contains(&("released", Some("client went away"))), "{actions:?}");
    assert!(!actions.iter().any(|(a, _)| *a == "failed"), "not a failure: {actions:?}");
}

/// A release counts its attempt, and on the last attempt the task is a dead
/// letter, as when its lease is lost: a task whose handler takes its process
/// down (a gateway client that crashes on it, released on disconnect) stops
/// coming back. It came back as attempt 3, 4, ... of 2 before.
#[tokio::test]
async fn a_task_released_on_its_last_attempt_is_a_dead_letter() {
    let db = TestDb::new().await;
    setup(&db, fast().lease(Duration::from_secs(120)).max_attempts(2)).await;
    let id = publish(&db.pool, "jobs", job(1)).await.unwrap();
    let attempts: Log<i32> = Arc::default();
    let handler = {
        let attempts = attempts.clone();
        move |msg: Message<Value>| {
            let attempts = attempts.clone();
            async move {
                attempts.lock().unwrap().push(msg.attempt());
                msg.release("client went away").await.unwrap();
                Ok::<_, HandlerError>(())
            }
        }
    };
    let h = sub(&db.pool, serial(), handler).await.unwrap();
    wait_until(WAIT, "the task a dead letter", || async { count_in(&db, "discarded").await == 1 }).await;
    // Time for a third delivery, were there one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2]);
    let log = task_log(&db.pool, "jobs", "c", id).await.unwrap();
    let actions: Vec<(&str, i32, Option<&str>)> =
        log.iter().map(|e| (e.action.as_str(), e.attempt, e.reason.as_deref())).collect();
    assert_eq!(
        actions.last().copied(),
        Some(("discarded", 2, Some("released on its last attempt: client went away"))),
        "{actions:?}"
    );
}

/// `Message::ack_batched` acks with the completer's batches and returns once
/// written; the task is then settled, as after `ack`.
#[tokio::test]
async fn a_batched_ack_completes_the_task_once_written() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    publish_batch(&db.pool, "jobs", (0..50).map(job)).await.unwrap();
    let outcomes: Log<String> = Arc::default();
    let handler = {
        let outcomes = outcomes.clone();
        move |msg: Message<Value>| {
            let outcomes = outcomes.clone();
            async move {
                msg.ack_batched().await?;
                let again = msg.ack_batched().await.unwrap_err();
                outcomes.lock().unwrap().push(again.to_string());
                Ok::<_, HandlerError>(())
            }
        }
    };
    let h = sub(&db.pool, Subscription::new("jobs", "c").concurrency(16), handler).await.unwrap();
    wait_until(WAIT, "every task acked", || async { outcomes.lock().unwrap().len() == 50 }).await;
    h.shutdown(Duration::from_secs(5)).await;
    assert!(outcomes.lock().unwrap().iter().all(|e| e.contains("already settled")), "{:?}", outcomes.lock().unwrap());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.tasks").fetch_one(&db.pool).await.unwrap();
    assert_eq!(left, 0, "every task completed (and removed)");
}

/// Issue 23, defect 4, in the library: a handler whose nack or release
/// cannot be written (a trigger refuses `running → available`) and that
/// returns `Ok` all the same does not ack its task: it stays running under
/// its lease. So does one that says `leave_to_lease`.
#[tokio::test]
async fn a_failed_nack_or_release_or_leave_to_lease_is_never_an_implicit_ack() {
    let db = TestDb::new().await;
    setup(&db, fast()).await;
    let running_to_available = "OLD.state = 'running' AND NEW.state = 'available'";
    support::inject_fault(&db.pool, "refuse_available", "UPDATE ON sluice.tasks", Some(running_to_available)).await;
    let ids = publish_batch(&db.pool, "jobs", (0..3).map(job)).await.unwrap();
    let failed: Log<(i64, bool)> = Arc::default();
    let seen = failed.clone();
    let h = sub(&db.pool, Subscription::new("jobs", "c"), move |msg: Message<Value>| {
        let seen = seen.clone();
        async move {
            let refused = match n_of(&msg) {
                0 => msg.nack(Nack::requeue_end()).await.is_err(),
                1 => msg.release("handed back").await.is_err(),
                _ => {
                    msg.leave_to_lease();
                    true
                }
            };
            seen.lock().unwrap().push((n_of(&msg), refused));
            Ok::<_, HandlerError>(())
        }
    })
    .await
    .unwrap();
    wait_until(WAIT, "three handlers returned", || async { failed.lock().unwrap().len() == 3 }).await;
    // Whatever was queued to ack is written by the shutdown's flush.
    h.shutdown(Duration::from_secs(5)).await;
    let mut got = failed.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, [(0, true), (1, true), (2, true)], "the nack and the release were refused");
    for id in ids {
        assert_eq!(state_of(&db, id).await, Some(TaskState::Running), "event {id:?}: left to its lease");
    }
}
