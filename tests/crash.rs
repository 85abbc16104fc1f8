//! Worker processes killed with SIGKILL. This binary is its own worker: run
//! with SLUICE_CRASH_WORKER set it subscribes and holds its tasks forever;
//! run by `cargo test` it is the test, starting and killing such workers.
//! (No libtest harness: the child must not run the tests again.)

use std::time::Duration;

use serde_json::{json, Value};
use sluice::{
    create_consumer, create_stream, get_task, publish, sub, ConsumerOptions, HandlerError, Message, NewEvent,
    StreamOptions, Subscription, TaskError, TaskRef,
};
use support::{wait_until, TestDb};
use tokio::io::{AsyncBufReadExt, BufReader};

type TestFn = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

const WORKER_ENV: &str = "SLUICE_CRASH_WORKER";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if let Ok(url) = std::env::var(WORKER_ENV) {
        rt.block_on(worker(url));
        return;
    }
    let tests: [(&str, TestFn); 1] =
        [("a_killed_workers_task_is_handled_again_and_its_late_ack_refused", || Box::pin(killed_worker()))];
    let mut failed = 0;
    for (name, test) in tests {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(test())));
        println!("test {name} ... {}", if result.is_ok() { "ok" } else { "FAILED" });
        failed += usize::from(result.is_err());
    }
    println!("{} passed, {failed} failed", tests.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The worker process: hands each task's hold to the parent on stdout, then
/// never finishes it.
async fn worker(url: String) {
    let pool = sqlx::PgPool::connect(&url).await.expect("worker connects");
    let subscription = Subscription::new("jobs", "c")
        .poll_interval(Duration::from_millis(100))
        .heartbeat(Duration::from_millis(200))
        .dead_after(Duration::from_secs(2));
    let _handle = sub(&pool, subscription, |msg: Message<Value>| async move {
        println!("HOLDING {}", serde_json::to_string(msg.task()).unwrap());
        std::future::pending::<()>().await;
        Ok::<_, HandlerError>(())
    })
    .await
    .expect("worker subscribes");
    std::future::pending::<()>().await;
}

async fn killed_worker() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    // A long lease: the task must come back because the worker's heartbeat
    // stopped, not because its lease ran out.
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default().lease(Duration::from_secs(120))).await.unwrap();

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(WORKER_ENV, &db.url)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker process");
    let id = publish(&db.pool, "jobs", NewEvent::new("jobs.run", &json!({"n": 1})).unwrap()).await.unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the worker picks the task up")
        .unwrap()
        .expect("a line from the worker");
    let held: TaskRef = serde_json::from_str(line.strip_prefix("HOLDING ").expect("a HOLDING line")).unwrap();
    assert_eq!(held.event_id, id);
    assert_eq!(held.attempt, 1);

    // SIGKILL mid-handler: no shutdown, no release, the heartbeat just stops.
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let handled = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = handled.clone();
    let rescuer = sub(
        &db.pool,
        Subscription::new("jobs", "c")
            .poll_interval(Duration::from_millis(100))
            .heartbeat(Duration::from_millis(200))
            .dead_after(Duration::from_secs(2)),
        move |msg: Message<Value>| {
            let h = h.clone();
            async move {
                h.lock().unwrap().push(msg.attempt());
                Ok::<_, HandlerError>(())
            }
        },
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(60), "the task handled by another worker", || async {
        !handled.lock().unwrap().is_empty()
    })
    .await;
    wait_until(Duration::from_secs(30), "the task completed", || async {
        get_task(&db.pool, "jobs", "c", id).await.is_err()
    })
    .await;
    rescuer.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*handled.lock().unwrap(), vec![2], "handled again, as attempt 2");

    // The dead worker's late ack: refused, nothing changed.
    let e = held.ack(&db.pool).await.unwrap_err();
    assert!(matches!(e, TaskError::LeaseLost { attempt: 1, .. }), "{e:?}");
    let log: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT action::text, reason FROM sluice.task_log").fetch_all(&db.pool).await.unwrap();
    assert_eq!(log, vec![("lease_expired".to_string(), Some("lease expired".to_string()))]);
    let workers: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice.workers").fetch_one(&db.pool).await.unwrap();
    assert_eq!(workers, 0, "the dead worker was forgotten and the rescuer unregistered");
}
