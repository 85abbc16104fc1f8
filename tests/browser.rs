//! The dashboard in a real browser: headless Chromium, driven over WebDriver
//! (chromedriver, through fantoccini), against the real `sluice serve` on a
//! seeded database while a real subscriber works the queue. Each test
//! clicks through the pages as an operator would, and checks both what the
//! pages show and what changed in the database.
//!
//! They need Chromium and chromedriver (Debian's `chromium` and
//! `chromium-driver`), so a plain `cargo test` skips them: `.ci/run`
//! installs both and runs `cargo test --test browser -- --ignored`, as does
//! `just test-browser`. `CHROMEDRIVER` and `CHROMIUM` name other binaries
//! than the ones on PATH and in /usr/bin.
//!
//! With `SLUICE_SCREENSHOTS=DIR`, each page visited is saved as
//! `DIR/NAME.png`; `just screenshots` refreshes `docs/screenshots/`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::error::NewSessionError;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use sluice::{
    ConsumerOptions, EventId, HandlerError, Message, NewEvent, StreamOptions, SubscriberHandle, Subscription, TaskState,
};
use support::TestDb;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const BILLING: &str = "/streams/orders/consumers/billing";

/// How long the dashboard may take to show a change (its pages refresh
/// themselves when the server says the queue changed, or every few
/// seconds), or the subscriber to act on one: far more than either needs.
const PATIENCE: Duration = Duration::from_secs(30);

/// `sluice serve` on a free port, stopped when dropped.
struct Serve {
    _process: Child,
    /// `http://127.0.0.1:PORT`, where the dashboard is.
    base: String,
}

async fn serve(url: &str) -> Serve {
    let mut process = Command::new(support::sluice_binary().await)
        .args(["--database-url", url, "serve", "--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env_remove("SLUICE_BASIC_AUTH")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sluice serve");
    // Port 0: the server says where it listens on its first line.
    let mut lines = tokio::io::BufReader::new(process.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("sluice serve says where it listens within 30 s")
        .unwrap()
        .unwrap_or_default();
    let address = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("an address in {first:?}"));
    Serve { _process: process, base: format!("http://{address}") }
}

/// chromedriver: `CHROMEDRIVER`, else the first on PATH, else Debian's.
fn chromedriver() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMEDRIVER").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "CHROMEDRIVER={} is not a file", path.display());
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .chain([PathBuf::from("/usr/bin/chromedriver")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no chromedriver on PATH or at /usr/bin/chromedriver: the browser tests need Chromium and its \
                 driver (Debian: `apt-get install chromium chromium-driver`, as .ci/run does), or \
                 CHROMEDRIVER=/path/to/chromedriver (and CHROMIUM=/path/to/the/browser if chromedriver \
                 does not find it)"
            )
        })
}

/// The browser binary: `CHROMIUM`, else Debian's `/usr/bin/chromium`, else
/// none named (chromedriver then looks for Chrome itself).
fn chromium() -> Option<String> {
    match std::env::var("CHROMIUM") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => Some("/usr/bin/chromium".to_string()).filter(|p| std::path::Path::new(p).is_file()),
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// Headless Chromium on a chromedriver of its own, at the dashboard.
struct Browser {
    client: Client,
    /// The dashboard's address, which paths are joined to.
    base: String,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A killed chromedriver leaves its Chromium running (when a test
        // fails before `close`): end the whole process group it leads.
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
    }
}

async fn open(base: &str) -> Browser {
    let chromedriver = chromedriver();
    let port = free_port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
    let mut options = json!({
        // We run as root in CI, where Chromium's sandbox cannot start; and
        // /dev/shm may be small in containers.
        "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"],
    });
    if let Some(binary) = chromium() {
        options["binary"] = json!(binary);
    }
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": options,
        // What the page logs, for `js_errors`.
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let serde_json::Value::Object(capabilities) = capabilities else { unreachable!("an object") };
    let webdriver = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = loop {
        let mut builder = ClientBuilder::new(HttpConnector::new());
        match builder.capabilities(capabilities.clone()).connect(&webdriver).await {
            Ok(client) => break client,
            // Not listening yet.
            Err(NewSessionError::Failed(_) | NewSessionError::FailedC(_) | NewSessionError::Lost(_))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no browser session from {} on port {port}: {e}", chromedriver.display()),
        }
    };
    // The window is 1280×900; make the page in it that size (the
    // screenshots' size) by adding what the window's frame takes.
    let frame = "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]";
    let frame: [u32; 2] =
        serde_json::from_value(client.execute(frame, vec![]).await.expect("the window's frame")).expect("two numbers");
    client.set_window_size(1280 + frame[0], 900 + frame[1]).await.expect("size the window");
    Browser { client, base: base.to_string(), driver }
}

/// chromedriver's log of what the pages wrote to the console and threw
/// (WebDriver has no standard command for it; fantoccini sends this one).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}

impl Browser {
    /// Opens a page of the dashboard, as typed in the address bar.
    async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    /// The text of the first element `css` selects, if any, read at one
    /// instant (the pages replace parts of themselves while we read).
    async fn text(&self, css: &str) -> Option<String> {
        let script = "const e = document.querySelector(arguments[0]); return e && e.textContent.trim()";
        let found = self.client.execute(script, vec![json!(css)]).await.unwrap_or_else(|e| panic!("read {css}: {e}"));
        serde_json::from_value(found).expect("a string or null")
    }

    /// The rows of the table `css` selects, below its heading row: each
    /// cell's text under its column's heading. Read at one instant.
    async fn rows(&self, css: &str) -> Vec<Row> {
        let script = "const t = document.querySelector(arguments[0]);
            if (!t) return [];
            const [head, ...rows] = [...t.rows].map(r => [...r.cells].map(c => c.textContent.trim()));
            return rows.map(r => Object.fromEntries(r.map((text, i) => [head[i], text])))";
        let found = self.client.execute(script, vec![json!(css)]).await.unwrap_or_else(|e| panic!("read {css}: {e}"));
        serde_json::from_value(found).expect("rows of strings")
    }

    /// Waits for the page whose heading is `heading` (after a click, htmx
    /// swaps the new page in); on timeout, says what the browser shows.
    async fn wait_for_page(&self, heading: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.text("h1").await.as_deref() == Some(heading) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        let title = self.client.title().await.unwrap_or_default();
        let body = self.text("body").await.unwrap_or_default();
        panic!("no page {heading:?} after {PATIENCE:?}: the browser is at {url} ({title:?}), which reads: {body:?}");
    }

    /// Clicks what `what` finds once it is there. An element that the page
    /// replaced between finding and clicking is found again.
    async fn click(&self, what: Locator<'_>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let clicked = match self.client.find(what).await {
                Ok(element) => element.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if (e.is_no_such_element() || e.is_stale_element_reference()) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("click {what:?}: {e}"),
            }
        }
    }

    /// Accepts the confirmation the page asks (htmx's `hx-confirm`), after
    /// checking that it asks `question`.
    async fn confirm(&self, question: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let asked = loop {
            match self.client.get_alert_text().await {
                Ok(text) => break text,
                Err(e) if e.is_no_such_alert() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("the page asks {question:?}: {e}"),
            }
        };
        assert_eq!(asked, question, "the confirmation asked");
        self.client.accept_alert().await.expect("accept the confirmation");
    }

    /// Saves what the browser shows as `NAME.png` in `SLUICE_SCREENSHOTS`
    /// (relative to the workspace), when that is set.
    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("SLUICE_SCREENSHOTS").filter(|d| !d.is_empty()) else { return };
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Errors the pages logged or threw since the last call.
    async fn js_errors(&self) -> Vec<String> {
        let log = self.client.issue_cmd(BrowserLog).await.expect("chromedriver's browser log");
        let entries = log.as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    async fn close(self) {
        self.client.clone().close().await.expect("end the browser session");
    }
}

/// A table row: each cell's text under its column's heading.
type Row = BTreeMap<String, String>;

/// A row of "Tasks by state" with these counts and zero for the others.
fn by_state(counts: &[(&str, usize)]) -> Row {
    let states = ["scheduled", "waiting", "available", "running", "completed", "discarded", "cancelled"];
    let count = |state: &str| counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
    states.iter().map(|s| (s.to_string(), count(s).to_string())).collect()
}

/// Polls `probe` every 100 ms until `done` holds for what it returns, and
/// returns that; panics with the last value seen after `timeout`.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F, done: impl Fn(&T) -> bool) -> T
where
    T: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = probe().await;
        if done(&seen) {
            return seen;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The seeded queue: its database, the subscriber working it, the switch
/// that fixes its handler and what the handler was called with.
struct Queue {
    db: TestDb,
    subscriber: SubscriberHandle,
    /// While false, the handler fails `orders.*.refund` events.
    fixed: Arc<AtomicBool>,
    /// Each call of the handler: the event and whether it succeeded.
    calls: Arc<Mutex<Vec<(EventId, bool)>>>,
}

impl Queue {
    /// How the handler's calls for event `id` went, in order (true: it succeeded).
    fn calls_for(&self, id: EventId) -> Vec<bool> {
        self.calls.lock().unwrap().iter().filter(|(e, _)| *e == id).map(|(_, ok)| *ok).collect()
    }

    /// The events of billing's tasks in `state`, from the database.
    async fn ids_in(&self, state: &str) -> Vec<EventId> {
        sqlx::query_scalar(
            "SELECT t.event_id FROM sluice.tasks t JOIN sluice.consumers c ON c.id = t.consumer_id
             WHERE c.name = 'billing' AND t.state::text = $1 ORDER BY 1",
        )
        .bind(state)
        .fetch_all(&self.db.direct)
        .await
        .expect("list tasks")
        .into_iter()
        .map(EventId)
        .collect()
    }

    /// The states of billing's tasks of `events`, from the database.
    async fn states_of(&self, events: &[EventId]) -> Vec<String> {
        let ids: Vec<i64> = events.iter().map(|e| e.0).collect();
        sqlx::query_scalar(
            "SELECT t.state::text FROM sluice.tasks t JOIN sluice.consumers c ON c.id = t.consumer_id
             WHERE c.name = 'billing' AND t.event_id = ANY($1) ORDER BY t.event_id",
        )
        .bind(ids)
        .fetch_all(&self.db.direct)
        .await
        .expect("read task states")
    }

    async fn stop(self) {
        self.subscriber.shutdown(Duration::from_secs(5)).await;
    }
}

/// Stream `orders`, consumer `billing` (two attempts, quick retries,
/// completed tasks kept for the pages to show) and a subscriber whose
/// handler fails `orders.*.refund` events until `fixed` is set: four
/// `orders.eu.created` events complete and three `orders.eu.refund` events
/// become dead letters. The subscriber keeps running.
async fn seeded() -> Queue {
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();
    let options = ConsumerOptions::default()
        .max_attempts(2)
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .completed_retention(Duration::from_secs(3600));
    sluice::create_consumer(&db.pool, "orders", "billing", options).await.unwrap();
    let fixed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let subscriber = {
        let (fixed, calls) = (fixed.clone(), calls.clone());
        // Heartbeats often, so the throughput chart has the work to show.
        let subscription = Subscription::new("orders", "billing").heartbeat(Duration::from_millis(250));
        sluice::sub(&db.pool, subscription, move |msg: Message<serde_json::Value>| {
            let ok = !msg.subject().ends_with(".refund") || fixed.load(Ordering::SeqCst);
            calls.lock().unwrap().push((msg.id(), ok));
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(HandlerError::new("the refunds table is missing"))
                }
            }
        })
        .await
        .unwrap()
    };
    let events = (0..7).map(|n| {
        let subject = if n % 2 == 0 { "orders.eu.created" } else { "orders.eu.refund" };
        NewEvent::new(subject, &json!({ "order": 1000 + n })).unwrap()
    });
    sluice::publish_batch(&db.pool, "orders", events).await.unwrap();
    support::wait_until(PATIENCE, "4 completed tasks and 3 dead letters", || async {
        support::task_states(&db.pool, "billing").await == [("completed".to_string(), 4), ("discarded".to_string(), 3)]
    })
    .await;
    support::wait_until(PATIENCE, "the hour's throughput: 4 completed, 6 failed attempts", || async {
        let hour = sluice::throughput(&db.pool, Some("orders"), Some("billing"), 60).await.unwrap();
        let sum = |f: fn(&sluice::Minute) -> i64| hour.iter().map(f).sum::<i64>();
        (sum(|m| m.completed), sum(|m| m.failed)) == (4, 6)
    })
    .await;
    Queue { db, subscriber, fixed, calls }
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver (Debian: chromium, chromium-driver); run by .ci/run and `just test-browser`"]
async fn a_dead_letter_is_found_from_the_overview_and_retried_from_its_page() {
    let queue = seeded().await;
    let server = serve(&queue.db.url).await;
    let browser = open(&server.base).await;
    let dead = queue.ids_in("discarded").await;
    assert_eq!(dead.len(), 3, "the seeded dead letters");

    // The overview: the stream, the consumer and its dead letters.
    browser.goto("/").await;
    browser.wait_for_page("Overview").await;
    assert_eq!(browser.text("#dead-letters").await, Some(dead.len().to_string()));
    assert_eq!(browser.text("#throughput .completed-total").await.as_deref(), Some("4"), "the chart's hour");
    assert_eq!(browser.text("#throughput .failed-total").await.as_deref(), Some("6"), "the chart's hour");
    let consumers = browser.rows("#consumers").await;
    assert_eq!(consumers.len(), 1, "one consumer: {consumers:?}");
    assert_eq!((consumers[0]["stream"].as_str(), consumers[0]["consumer"].as_str()), ("orders", "billing"));
    assert_eq!(consumers[0]["dead letters"], dead.len().to_string(), "{consumers:?}");
    let streams = browser.rows("#streams").await;
    assert_eq!(streams.len(), 1, "one stream: {streams:?}");
    assert_eq!((streams[0]["stream"].as_str(), streams[0]["events"].as_str()), ("orders", "7"), "{streams:?}");
    browser.screenshot("overview").await;

    // The stream, then its consumer.
    browser.click(Locator::LinkText("orders")).await;
    browser.wait_for_page("Stream orders").await;
    let consumers = browser.rows("#consumers").await;
    assert_eq!(consumers.len(), 1, "{consumers:?}");
    assert_eq!(consumers[0]["consumer"], "billing", "{consumers:?}");
    browser.screenshot("stream").await;

    browser.click(Locator::LinkText("billing")).await;
    browser.wait_for_page("Consumer billing of stream orders").await;
    assert_eq!(browser.text("#status .badge").await.as_deref(), Some("running"));
    assert_eq!(browser.rows("#tasks-by-state").await, [by_state(&[("completed", 4), ("discarded", 3)])]);
    let workers = browser.rows("#worker-list").await;
    assert_eq!(workers.len(), 1, "the test's subscriber: {workers:?}");
    browser.screenshot("consumer").await;

    // Its tasks, all of them, then only the dead letters, filtered as a
    // user does: choose the state, press Filter.
    browser.click(Locator::LinkText("All tasks")).await;
    browser.wait_for_page("Tasks of billing (stream orders)").await;
    let all = browser.rows("#tasks").await;
    assert_eq!(all.len(), 7, "every task: {all:?}");
    assert!(all.iter().any(|r| r["state"] == "completed"), "{all:?}");
    browser
        .client
        .find(Locator::Css("form.filters select[name=state]"))
        .await
        .expect("the state filter")
        .select_by_value("discarded")
        .await
        .expect("choose discarded");
    browser.click(Locator::XPath("//form[contains(@class, 'filters')]//button[normalize-space()='Filter']")).await;
    let listed = eventually(
        PATIENCE,
        "only dead letters listed",
        || browser.rows("#tasks"),
        |rows| !rows.is_empty() && rows.iter().all(|r| r["state"] == "discarded"),
    )
    .await;
    let ids: Vec<EventId> = listed.iter().map(|r| EventId(r["event"].parse().expect("an event id"))).collect();
    assert_eq!(ids, dead, "the dead letters the database has: {listed:?}");
    assert!(listed.iter().all(|r| r["last error"] == "the refunds table is missing"), "{listed:?}");
    browser.screenshot("tasks").await;

    // One dead letter's page: each attempt's error, and Retry.
    let retried = dead[0];
    browser.click(Locator::LinkText(&retried.0.to_string())).await;
    browser.wait_for_page(&format!("Task of event {}", retried.0)).await;
    assert_eq!(browser.text("#state").await.as_deref(), Some("discarded"));
    let errors = browser.rows("#errors").await;
    assert_eq!(errors.len(), 2, "one error per attempt: {errors:?}");
    assert!(errors.iter().all(|e| e["error"] == "the refunds table is missing"), "{errors:?}");
    browser.screenshot("task").await;

    queue.fixed.store(true, Ordering::SeqCst);
    browser.click(Locator::Css(r#"form[action$="/retry"] button"#)).await;
    browser.confirm(&format!("retry the task of event {}?", retried.0)).await;
    // The action answers with the task's page, no longer a dead letter…
    eventually(
        PATIENCE,
        "the retried task's page",
        || browser.text("#state"),
        |s| s.as_deref().is_some_and(|s| s != "discarded"),
    )
    .await;
    // …and the subscriber completes it: reloaded, the page says so.
    let task_page = format!("{BILLING}/tasks/{}", retried.0);
    let reloaded = || async {
        browser.goto(&task_page).await;
        browser.text("#state").await
    };
    eventually(PATIENCE, "the task completed", reloaded, |s| s.as_deref() == Some("completed")).await;
    let task = sluice::get_task(&queue.db.pool, "orders", "billing", retried).await.unwrap();
    assert_eq!(task.state, TaskState::Completed);
    assert_eq!(queue.calls_for(retried), [false, false, true], "two failed attempts, then the retry");
    assert_eq!(queue.ids_in("discarded").await, dead[1..], "the other dead letters are left alone");

    // The overview counts one dead letter fewer (it refreshes itself).
    browser.click(Locator::LinkText("Overview")).await;
    browser.wait_for_page("Overview").await;
    eventually(
        PATIENCE,
        "two dead letters on the overview",
        || browser.text("#dead-letters"),
        |n| n.as_deref() == Some("2"),
    )
    .await;

    // The workers: the test's subscriber, working for billing.
    browser.click(Locator::LinkText("Workers")).await;
    browser.wait_for_page("Workers").await;
    let workers = browser.rows("#worker-list").await;
    let in_db = sluice::list_workers(&queue.db.pool, None, None).await.unwrap();
    assert_eq!(workers.len(), in_db.len(), "every worker the database has: {workers:?}");
    assert_eq!(workers.len(), 1, "the test's subscriber: {workers:?}");
    assert_eq!((workers[0]["stream"].as_str(), workers[0]["consumer"].as_str()), ("orders", "billing"));
    assert!(["active", "idle"].contains(&workers[0]["status"].as_str()), "a live worker: {workers:?}");
    assert_eq!(workers[0]["id"], in_db[0].id.to_string(), "{workers:?}");
    browser.screenshot("workers").await;

    assert_eq!(browser.js_errors().await, Vec::<String>::new(), "no errors in the browser's console");
    browser.close().await;
    queue.stop().await;
}

#[tokio::test]
#[ignore = "needs chromium and chromedriver (Debian: chromium, chromium-driver); run by .ci/run and `just test-browser`"]
async fn a_consumer_paused_from_its_page_claims_nothing_until_resumed() {
    let queue = seeded().await;
    let server = serve(&queue.db.url).await;
    let browser = open(&server.base).await;

    browser.goto(BILLING).await;
    assert_eq!(browser.text("#status .badge").await.as_deref(), Some("running"));
    browser.click(Locator::Css(r#"form[action$="/pause"] button"#)).await;
    browser.confirm("Pause this consumer? Its workers will stop claiming tasks.").await;
    eventually(
        PATIENCE,
        "the page to say paused",
        || browser.text("#status .badge"),
        |s| s.as_deref() == Some("paused"),
    )
    .await;
    assert!(sluice::get_consumer(&queue.db.pool, "orders", "billing").await.unwrap().paused);

    // New events become tasks (the backlog shows) but nobody claims them.
    let events = (0..5).map(|n| NewEvent::new("orders.us.created", &json!({ "order": 2000 + n })).unwrap());
    let new = sluice::publish_batch(&queue.db.pool, "orders", events).await.unwrap();
    let available = vec!["available".to_string(); new.len()];
    eventually(PATIENCE, "the new events' tasks", || queue.states_of(&new), |s| *s == available).await;
    let backlog = [by_state(&[("available", 5), ("completed", 4), ("discarded", 3)])];
    eventually(PATIENCE, "the page to show the backlog", || browser.rows("#tasks-by-state"), |rows| *rows == backlog)
        .await;
    browser.screenshot("consumer-paused").await;
    let hold = Instant::now() + Duration::from_secs(3);
    while Instant::now() < hold {
        assert_eq!(queue.states_of(&new).await, available, "claimed while paused");
        assert!(new.iter().all(|e| queue.calls_for(*e).is_empty()), "handled while paused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    browser.click(Locator::Css(r#"form[action$="/resume"] button"#)).await;
    eventually(
        PATIENCE,
        "the page to say running",
        || browser.text("#status .badge"),
        |s| s.as_deref() == Some("running"),
    )
    .await;
    assert!(!sluice::get_consumer(&queue.db.pool, "orders", "billing").await.unwrap().paused);
    let completed = vec!["completed".to_string(); new.len()];
    eventually(PATIENCE, "the new events' tasks completed", || queue.states_of(&new), |s| *s == completed).await;
    assert!(new.iter().all(|e| queue.calls_for(*e) == [true]), "each handled once");
    let done = [by_state(&[("completed", 9), ("discarded", 3)])];
    eventually(PATIENCE, "the page to show them completed", || browser.rows("#tasks-by-state"), |rows| *rows == done)
        .await;

    assert_eq!(browser.js_errors().await, Vec::<String>::new(), "no errors in the browser's console");
    browser.close().await;
    queue.stop().await;
}
