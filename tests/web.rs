//! The dashboard (`sluice_web::router`) page by page and action by action,
//! through `tower::ServiceExt::oneshot` on a real database: what a user sees
//! (status, text on the page) and what changed in the queue.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use sluice::{ConsumerOptions, EventId, HandlerError, Message, NewEvent, StreamOptions, Subscription, TaskState};
use sluice_web::WebState;
use support::TestDb;
use tower::ServiceExt;

/// What came back.
struct Page {
    status: u16,
    body: String,
    location: Option<String>,
    headers: axum::http::HeaderMap,
}

async fn send(app: &Router, request: Request<Body>) -> Page {
    let response = app.clone().oneshot(request).await.expect("the router always answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let location = headers.get(header::LOCATION).map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Page { status, body: String::from_utf8_lossy(&bytes).into_owned(), location, headers }
}

async fn get(app: &Router, path: &str) -> Page {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

/// How a POST says it is not forged. All but [`Proof::CrossSite`] come with
/// the cookie a page of the dashboard set, as a browser sends them.
enum Proof<'a> {
    /// htmx's `HX-Request: true` header.
    Htmx,
    /// A `csrf` form field.
    Token(&'a str),
    /// Neither.
    Nothing,
    /// htmx's header without the cookie: a request another site started,
    /// which the browser sends without the `SameSite=Strict` cookie.
    CrossSite,
}

/// The dashboard's cookie, from the `Set-Cookie` of its overview page.
async fn cookie(app: &Router) -> String {
    let page = get(app, "/").await;
    let set = page.headers.get(header::SET_COOKIE).expect("pages set the cookie").to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn post(app: &Router, path: &str, proof: Proof<'_>, form: &str) -> Page {
    let mut body = form.to_string();
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if !matches!(proof, Proof::CrossSite) {
        request = request.header(header::COOKIE, cookie(app).await);
    }
    match proof {
        Proof::Htmx | Proof::CrossSite => request = request.header("HX-Request", "true"),
        Proof::Token(token) => body = format!("csrf={token}&{body}"),
        Proof::Nothing => {}
    }
    send(app, request.body(Body::from(body)).unwrap()).await
}

/// How many times `needle` occurs in `page`.
fn count(page: &str, needle: &str) -> usize {
    page.matches(needle).count()
}

const BILLING: &str = "/streams/orders/consumers/billing";

/// Stream `orders`, consumer `billing` (one attempt) with, by event id order:
/// three `orders.eu.fail` and two `orders.us.fail` tasks discarded by the
/// handler (the first with a `<script>` payload and metadata), then two
/// `orders.eu.later` tasks scheduled an hour ahead. No subscriber is left
/// running. Returns the event ids.
async fn seeded() -> (TestDb, Vec<EventId>) {
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();
    sluice::create_consumer(&db.pool, "orders", "billing", ConsumerOptions::default().max_attempts(1)).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut events = vec![NewEvent::new("orders.eu.fail", &serde_json::json!({"note": "<script>alert(1)</script>"}))
        .unwrap()
        .metadata("tenant", "<acme>")];
    for (subject, n) in [("orders.eu.fail", 2), ("orders.us.fail", 2)] {
        events.extend((0..n).map(|i| NewEvent::new(subject, &serde_json::json!({"n": i})).unwrap()));
    }
    events.extend((0..2).map(|i| NewEvent::new("orders.eu.later", &i).unwrap().deliver_at(later)));
    let ids = sluice::publish_batch(&db.pool, "orders", events).await.unwrap();
    let handle =
        sluice::sub(&db.pool, Subscription::new("orders", "billing"), |msg: Message<serde_json::Value>| async move {
            if msg.subject().ends_with(".fail") {
                Err(HandlerError::discard("the <b>tax</b> table is missing"))
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
    support::wait_until(Duration::from_secs(30), "5 dead letters and 2 scheduled tasks", || async {
        support::task_states(&db.pool, "billing").await == [("discarded".to_string(), 5), ("scheduled".to_string(), 2)]
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await;
    (db, ids)
}

fn app(db: &TestDb) -> Router {
    sluice_web::router(WebState::new(db.pool.clone()))
}

async fn state_of(db: &TestDb, id: EventId) -> TaskState {
    sluice::get_task(&db.pool, "orders", "billing", id).await.unwrap().state
}

async fn states(db: &TestDb) -> Vec<(String, i64)> {
    support::task_states(&db.pool, "billing").await
}

#[tokio::test]
async fn the_overview_shows_consumers_lag_tasks_workers_and_dead_letters() {
    let (db, _) = seeded().await;
    let beginning = ConsumerOptions::default().start(sluice::Start::Beginning);
    sluice::create_consumer(&db.pool, "orders", "audit", beginning).await.unwrap();
    sluice::publish(&db.pool, "orders", NewEvent::new("orders.eu.created", &1).unwrap()).await.unwrap();
    let app = app(&db);

    let page = get(&app, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"<strong id="dead-letters">5</strong>"#), "{}", page.body);
    assert!(page.body.contains(r#"href="/streams/orders/consumers/billing""#), "{}", page.body);
    assert!(page.body.contains(r#"href="/streams/orders/consumers/audit""#), "{}", page.body);
    assert!(page.body.contains(r#"href="/streams/orders""#), "{}", page.body);
    // Dead letters link to the consumer's discarded tasks.
    assert!(page.body.contains(r#"href="/streams/orders/consumers/billing/tasks?state=discarded""#), "{}", page.body);
    assert!(page.body.contains("Workers by status") && page.body.contains("Tasks by state"), "{}", page.body);
    // The page refreshes itself when told to, with the vendored htmx.
    assert!(page.body.contains(r#"hx-trigger="sse:refresh""#), "{}", page.body);
    assert!(page.body.contains(&format!(r#"src="{}""#, sluice_web::HTMX_PATH)), "{}", page.body);

    // Lag, per consumer: billing has not seen the last event; audit has seen none of the eight.
    let billing = get(&app, BILLING).await;
    assert!(billing.body.contains(r#"<th>not yet materialized (lag)</th><td class="n">1</td>"#), "{}", billing.body);
    let audit = get(&app, "/streams/orders/consumers/audit").await;
    assert!(audit.body.contains(r#"<th>not yet materialized (lag)</th><td class="n">8</td>"#), "{}", audit.body);

    let stream = get(&app, "/streams/orders").await;
    assert_eq!(stream.status, 200);
    assert!(stream.body.contains("Stream orders") && stream.body.contains(">audit</a>"), "{}", stream.body);
}

#[tokio::test]
async fn counts_past_the_cap_are_shown_as_lower_bounds_or_estimates() {
    // The pages count up to sluice::STATS_COUNT_CAP (10,000) and no further,
    // whatever the backlog; past it they say so.
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();
    for consumer in ["billing", "ledger"] {
        sluice::create_consumer(&db.pool, "orders", consumer, ConsumerOptions::default()).await.unwrap();
    }
    support::backlog(&db.pool, "orders", 12_000, "ledger").await;
    let app = app(&db);
    let at_least = r#"<abbr class="inexact" title="counted up to 10000 and stopped: at least this many"#;

    let page = get(&app, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    // Overview: 10,000 available at least (ledger's), no dead letters (exact).
    assert!(page.body.contains(at_least), "{}", page.body);
    assert!(page.body.contains("≥ 10000</abbr>"), "{}", page.body);
    assert!(!page.body.contains("12000"), "nothing counted past the cap: {}", page.body);
    assert!(page.body.contains(r#"<strong id="dead-letters">0</strong>"#), "{}", page.body);

    // Ledger has no lag (exact), billing has the whole backlog as lag (at least the cap).
    let ledger = get(&app, "/streams/orders/consumers/ledger").await;
    assert!(ledger.body.contains(r#"<th>not yet materialized (lag)</th><td class="n">0</td>"#), "{}", ledger.body);
    let billing = get(&app, BILLING).await;
    assert!(
        billing.body.contains(r#"<th>not yet materialized (lag)</th><td class="n"><abbr class="inexact""#)
            && billing.body.contains("10000</abbr>"),
        "{}",
        billing.body
    );

    // Once the table is analyzed, the planner's estimate, marked as one.
    sqlx::query("ANALYZE sluice.tasks").execute(&db.pool).await.unwrap();
    let ledger = get(&app, "/streams/orders/consumers/ledger").await;
    let estimated =
        r#"<abbr class="inexact" title="counted up to 10000 and stopped: estimated from the planner's statistics"#;
    assert!(ledger.body.contains(estimated) && ledger.body.contains("≈ 1"), "{}", ledger.body);
}

#[tokio::test]
async fn htmx_is_served_from_the_binary_with_a_long_cache() {
    let db = TestDb::new().await;
    let page = get(&app(&db), sluice_web::HTMX_PATH).await;
    assert_eq!(page.status, 200);
    assert!(page.body.starts_with("var htmx="), "{}", &page.body[..100]);
    assert_eq!(page.headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert!(page.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));
}

#[tokio::test]
async fn a_consumer_is_paused_and_resumed_from_its_page() {
    let (db, _) = seeded().await;
    let state = WebState::new(db.pool.clone());
    let token = state.csrf_token().to_string();
    let app = sluice_web::router(state);

    let page = get(&app, BILLING).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<th>max attempts</th><td>1</td>"), "{}", page.body);
    assert!(page.body.contains(&format!(r#"action="{BILLING}/pause""#)), "{}", page.body);
    assert!(page.body.contains(&format!(r#"name="csrf" value="{token}""#)), "{}", page.body);

    let paused = post(&app, &format!("{BILLING}/pause"), Proof::Htmx, "").await;
    assert_eq!((paused.status, paused.location.as_deref()), (303, Some(BILLING)), "{}", paused.body);
    assert!(sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap().paused);
    let page = get(&app, BILLING).await;
    assert!(page.body.contains("paused") && page.body.contains(&format!(r#"action="{BILLING}/resume""#)));

    // A plain form (no htmx) with the token works as well.
    let resumed = post(&app, &format!("{BILLING}/resume"), Proof::Token(&token), "").await;
    assert_eq!(resumed.status, 303, "{}", resumed.body);
    assert!(!sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap().paused);
}

#[tokio::test]
async fn a_post_without_the_cookie_and_htmx_or_the_token_is_refused_and_changes_nothing() {
    let (db, ids) = seeded().await;
    let app = app(&db);
    let set = get(&app, BILLING).await.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.ends_with("; Path=/; SameSite=Strict; HttpOnly"), "{set}");
    let nested = sluice_web::router(WebState::new(db.pool.clone()).base_path("/queue"));
    let set = get(&nested, "/").await.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.contains("; Path=/queue; SameSite=Strict"), "{set}");
    let before = states(&db).await;
    let attempts = [
        (format!("{BILLING}/pause"), ""),
        (format!("{BILLING}/tasks/{}/retry", ids[0]), ""),
        (format!("{BILLING}/bulk/retry"), "state=discarded"),
        (format!("{BILLING}/selected/retry"), "event=1&event=2"),
        (format!("{BILLING}/reset"), "to=beginning"),
    ];
    for (path, form) in &attempts {
        for proof in [Proof::Nothing, Proof::Token("not-the-token"), Proof::Token("")] {
            let page = post(&app, path, proof, form).await;
            assert_eq!(page.status, 403, "{path}: {}", page.body);
            assert!(page.body.contains("CSRF token"), "{}", page.body);
        }
        let page = post(&app, path, Proof::CrossSite, form).await;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(page.body.contains("without the dashboard's cookie"), "{}", page.body);
        let stale = Request::post(path.as_str())
            .header("HX-Request", "true")
            .header(header::COOKIE, "sluice_csrf=from-an-earlier-process")
            .body(Body::from(*form))
            .unwrap();
        assert_eq!(send(&app, stale).await.status, 403, "{path}");
        // A header that is there but not `true` proves nothing.
        let request = Request::post(path.as_str())
            .header("HX-Request", "false")
            .header(header::COOKIE, cookie(&app).await)
            .body(Body::from(*form))
            .unwrap();
        assert_eq!(send(&app, request).await.status, 403, "{path}");
    }
    assert!(!sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap().paused);
    assert_eq!(states(&db).await, before);
    assert_eq!(state_of(&db, ids[0]).await, TaskState::Discarded);
}

#[tokio::test]
async fn tasks_are_listed_by_state_subject_and_age_and_paged_by_cursor() {
    let (db, ids) = seeded().await;
    let app = app(&db);

    let all = get(&app, &format!("{BILLING}/tasks")).await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(count(&all.body, "badge discarded"), 5, "{}", all.body);
    assert_eq!(count(&all.body, "badge scheduled"), 2, "{}", all.body);
    assert!(all.body.contains(&format!(r#"href="{BILLING}/tasks/{}""#, ids[0])), "{}", all.body);
    assert!(all.body.contains("the &lt;b&gt;tax&lt;/b&gt; table is missing"), "the last error, escaped");
    assert!(!all.body.contains("next-page"), "one page: {}", all.body);

    let dead = get(&app, &format!("{BILLING}/tasks?state=discarded")).await;
    assert_eq!((count(&dead.body, "badge discarded"), count(&dead.body, "badge scheduled")), (5, 0));
    let us = get(&app, &format!("{BILLING}/tasks?subject=orders.us.%2A")).await;
    assert_eq!(count(&us.body, "<td>orders.us.fail</td>"), 2, "{}", us.body);
    assert_eq!(count(&us.body, "<td>orders.eu."), 0, "{}", us.body);
    assert!(us.body.contains(r#"name="subject" value="orders.us.*""#), "the filter stays in its field");
    let old = get(&app, &format!("{BILLING}/tasks?older_than=1h")).await;
    assert_eq!(old.status, 200);
    assert!(old.body.contains("No tasks match."), "{}", old.body);
    let recent = get(&app, &format!("{BILLING}/tasks?older_than=0s&state=scheduled")).await;
    assert_eq!(count(&recent.body, "badge scheduled"), 2, "{}", recent.body);
    // JSON containment: {"n": 1} is in one EU and one US payload; the US one by subject too.
    let ones = get(&app, &format!("{BILLING}/tasks?payload=%7B%22n%22%3A+1%7D")).await;
    assert_eq!(count(&ones.body, "badge discarded"), 2, "{}", ones.body);
    let us_one = get(&app, &format!("{BILLING}/tasks?payload=%7B%22n%22%3A+1%7D&subject=orders.us.%3E")).await;
    assert!(us_one.body.contains(&format!(r#"href="{BILLING}/tasks/{}""#, ids[4])), "{}", us_one.body);
    assert_eq!(count(&us_one.body, "badge discarded"), 1, "{}", us_one.body);
    let tenant = get(&app, &format!("{BILLING}/tasks?metadata=%7B%22tenant%22%3A%22%3Cacme%3E%22%7D")).await;
    assert_eq!(count(&tenant.body, "badge discarded"), 1, "{}", tenant.body);
    assert!(tenant.body.contains(&format!(r#"href="{BILLING}/tasks/{}""#, ids[0])), "{}", tenant.body);

    // Past one page (50), a cursor link leads on; every task once, in event order.
    let events = (0..60).map(|i| {
        NewEvent::new("orders.eu.later", &i).unwrap().deliver_at(chrono::Utc::now() + chrono::Duration::hours(1))
    });
    sluice::publish_batch(&db.pool, "orders", events).await.unwrap();
    let handle = sluice::sub(&db.pool, Subscription::new("orders", "billing"), |_: Message<serde_json::Value>| async {
        Ok::<_, HandlerError>(())
    })
    .await
    .unwrap();
    support::wait_until(Duration::from_secs(30), "62 scheduled", || async {
        states(&db).await.contains(&("scheduled".to_string(), 62))
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await;
    let mut seen = Vec::new();
    let mut path = format!("{BILLING}/tasks?state=scheduled");
    for _ in 0..5 {
        let page = get(&app, &path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for piece in page.body.split(&format!(r#"<td><a href="{BILLING}/tasks/"#)).skip(1) {
            seen.push(piece.split('"').next().unwrap().parse::<i64>().unwrap());
        }
        match page.body.split(r#"id="next-page" href=""#).nth(1) {
            Some(rest) => path = rest.split('"').next().unwrap().replace("&amp;", "&"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 62, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, none twice: {seen:?}");
}

#[tokio::test]
async fn bad_filters_are_shown_next_to_their_fields_and_change_nothing() {
    let (db, _) = seeded().await;
    let app = app(&db);
    let before = states(&db).await;

    let page = get(&app, &format!("{BILLING}/tasks?state=dead&subject=a.%3E.b&older_than=soon")).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(
        page.body.contains(r#"<span class="field-error" id="error-state">unknown task state &quot;dead&quot;"#),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"id="error-subject">invalid subject pattern &quot;a.&gt;.b&quot;"#), "{}", page.body);
    assert!(page.body.contains(r#"id="error-older_than">&quot;soon&quot; is not a duration"#), "{}", page.body);
    assert!(page.body.contains(r#"name="subject" value="a.&gt;.b""#), "what was typed stays: {}", page.body);
    // htmx is told to show error pages: by default it drops 4xx responses.
    assert!(page.body.contains(r#"&quot;code&quot;:&quot;...&quot;,&quot;swap&quot;:true"#), "{}", page.body);
    assert_eq!(count(&page.body, "badge discarded"), 0, "nothing listed");

    let json = get(&app, &format!("{BILLING}/tasks?payload=%7Bn%7D&metadata=%7B%22n%22%3A1%7D")).await;
    assert_eq!(json.status, 400, "{}", json.body);
    assert!(json.body.contains(r#"id="error-payload">not JSON"#), "{}", json.body);
    assert!(json.body.contains(r#"id="error-metadata">invalid metadata_contains"#), "{}", json.body);
    let hidden = sluice_web::router(WebState::new(db.pool.clone()).hide_payloads(true));
    let guess = get(&hidden, &format!("{BILLING}/tasks?payload=%7B%22n%22%3A1%7D")).await;
    assert_eq!(guess.status, 400, "no guessing hidden payloads: {}", guess.body);
    assert!(!guess.body.contains(r#"name="payload""#), "no payload field when payloads are hidden");

    let cursor = get(&app, &format!("{BILLING}/tasks?after=yesterday")).await;
    assert_eq!(cursor.status, 400);
    assert!(cursor.body.contains(r#"id="error-after">&quot;yesterday&quot; is not a page cursor"#), "{}", cursor.body);

    // The bulk confirmation and the bulk action itself refuse them the same way.
    let confirm = get(&app, &format!("{BILLING}/bulk/retry?subject=a.%3E.b")).await;
    assert_eq!(confirm.status, 400, "{}", confirm.body);
    assert!(confirm.body.contains(r#"id="error-subject""#), "{}", confirm.body);
    for form in ["state=discarded&subject=a.%3E.b", "state=dead", "older_than=soon&state=discarded"] {
        let page = post(&app, &format!("{BILLING}/bulk/retry"), Proof::Htmx, form).await;
        assert_eq!(page.status, 400, "{form}: {}", page.body);
        assert!(page.body.contains("field-error"), "{}", page.body);
    }
    assert_eq!(states(&db).await, before);
}

#[tokio::test]
async fn unknown_streams_consumers_tasks_and_actions_are_404_pages_that_say_what() {
    let (db, ids) = seeded().await;
    let app = app(&db);
    let cases = [
        ("/streams/nope", "stream &quot;nope&quot; does not exist"),
        ("/streams/nope/consumers/billing", "consumer &quot;billing&quot; of stream &quot;nope&quot; does not exist"),
        ("/streams/orders/consumers/nope", "consumer &quot;nope&quot; of stream &quot;orders&quot; does not exist"),
        (
            "/streams/orders/consumers/nope/tasks",
            "consumer &quot;nope&quot; of stream &quot;orders&quot; does not exist",
        ),
        ("/streams/orders/consumers/billing/tasks/999999", "has no task for event 999999"),
        ("/streams/orders/consumers/billing/tasks/abc", "an event id is a positive number"),
        ("/streams/orders/consumers/billing/bulk/explode", "no action &quot;explode&quot;"),
    ];
    for (path, says) in cases {
        let page = get(&app, path).await;
        assert_eq!(page.status, 404, "{path}: {}", page.body);
        assert!(page.body.contains(says), "{path} should say {says:?}: {}", page.body);
        assert!(page.body.contains("<h1>Not found</h1>"), "{}", page.body);
    }
    let before = states(&db).await;
    for (path, says) in [
        (format!("{BILLING}/tasks/999999/retry"), "has no task for event 999999"),
        (format!("{BILLING}/tasks/{}/explode", ids[0]), "no action"),
        ("/streams/orders/consumers/nope/pause".to_string(), "consumer &quot;nope&quot;"),
        ("/streams/orders/consumers/nope/bulk/retry".to_string(), "consumer &quot;nope&quot;"),
    ] {
        let page = post(&app, &path, Proof::Htmx, "").await;
        assert_eq!(page.status, 404, "{path}: {}", page.body);
        assert!(page.body.contains(says), "{path}: {}", page.body);
    }
    assert_eq!(states(&db).await, before);
}

#[tokio::test]
async fn a_task_shows_its_event_errors_and_log_escaped_or_hidden() {
    let (db, ids) = seeded().await;
    let path = format!("{BILLING}/tasks/{}", ids[0]);

    let page = get(&app(&db), &path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"<span id="state" class="badge discarded">discarded</span>"#), "{}", page.body);
    assert!(page.body.contains("orders.eu.fail"));
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "the payload, escaped: {}", page.body);
    assert!(!page.body.contains("<script>alert"), "never raw: {}", page.body);
    assert!(page.body.contains("<th>tenant</th><td>&lt;acme&gt;</td>"), "metadata, escaped: {}", page.body);
    assert!(page.body.contains("<pre>the &lt;b&gt;tax&lt;/b&gt; table is missing</pre>"), "the attempt's error");
    assert!(
        page.body.contains(r#"<table id="log">"#) && page.body.contains("<td>discarded</td>"),
        "the log: {}",
        page.body
    );
    assert!(page.body.contains(&format!(r#"action="{path}/retry""#)), "a dead letter can be retried");
    assert!(page.body.contains(&format!(r#"action="{path}/cancel""#)), "or cancelled");

    let hidden = sluice_web::router(WebState::new(db.pool.clone()).hide_payloads(true));
    let page = get(&hidden, &path).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Payload and metadata hidden"), "{}", page.body);
    assert!(!page.body.contains("alert(1)") && !page.body.contains("acme"), "{}", page.body);
    assert!(page.body.contains("table is missing"), "errors are still shown");
}

#[tokio::test]
async fn one_task_is_retried_cancelled_or_discarded_from_its_page() {
    let (db, ids) = seeded().await;
    let app = app(&db);
    let (dead, later, later2) = (ids[0], ids[5], ids[6]);

    let retried = post(&app, &format!("{BILLING}/tasks/{dead}/retry"), Proof::Htmx, "reason=fixed+the+tax+table").await;
    assert_eq!(retried.status, 303, "{}", retried.body);
    assert_eq!(retried.location.as_deref(), Some(format!("{BILLING}/tasks/{dead}").as_str()));
    assert_eq!(state_of(&db, dead).await, TaskState::Available);
    let page = get(&app, &format!("{BILLING}/tasks/{dead}")).await;
    assert!(page.body.contains("<td>retried</td><td>fixed the tax table</td>"), "{}", page.body);

    assert_eq!(post(&app, &format!("{BILLING}/tasks/{later}/cancel"), Proof::Htmx, "").await.status, 303);
    assert_eq!(state_of(&db, later).await, TaskState::Cancelled);
    assert_eq!(post(&app, &format!("{BILLING}/tasks/{later2}/discard"), Proof::Htmx, "").await.status, 303);
    assert_eq!(state_of(&db, later2).await, TaskState::Discarded);

    // An action the state does not allow: 409, saying why, nothing changed.
    let refused = post(&app, &format!("{BILLING}/tasks/{dead}/retry"), Proof::Htmx, "").await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("it is available"), "{}", refused.body);
    assert_eq!(state_of(&db, dead).await, TaskState::Available);
}

#[tokio::test]
async fn every_matching_task_is_steered_after_a_confirmation_with_the_count() {
    let (db, ids) = seeded().await;
    let state = WebState::new(db.pool.clone());
    let token = state.csrf_token().to_string();
    let app = sluice_web::router(state);

    let list = get(&app, &format!("{BILLING}/tasks?state=discarded&subject=orders.eu.%2A")).await;
    let confirm_path = format!("{BILLING}/bulk/retry?state=discarded&amp;subject=orders.eu.*");
    assert!(list.body.contains(&confirm_path), "{}", list.body);

    let confirm = get(&app, &confirm_path.replace("&amp;", "&")).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("<strong>3 tasks</strong> will be retried (3 discarded)"), "{}", confirm.body);
    assert!(confirm.body.contains(r#"<input type="hidden" name="subject" value="orders.eu.*">"#), "{}", confirm.body);
    assert_eq!(
        states(&db).await,
        [("discarded".to_string(), 5), ("scheduled".to_string(), 2)],
        "a GET changes nothing"
    );

    // The confirmation's form, as a browser without htmx posts it.
    let done = post(
        &app,
        &format!("{BILLING}/bulk/retry"),
        Proof::Token(&token),
        "state=discarded&subject=orders.eu.%2A&older_than=&reason=fixed",
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("3 tasks retried"), "{}", done.body);
    assert_eq!(
        states(&db).await,
        [("available".to_string(), 3), ("discarded".to_string(), 2), ("scheduled".to_string(), 2)]
    );
    for id in &ids[..3] {
        assert_eq!(state_of(&db, *id).await, TaskState::Available);
    }

    // Cancel: only pending tasks count (dead letters only when the filter names them), and are cancelled.
    let confirm = get(&app, &format!("{BILLING}/bulk/cancel")).await;
    assert!(
        confirm.body.contains("<strong>5 tasks</strong> will be cancelled (2 scheduled, 3 available)")
            || confirm.body.contains("<strong>5 tasks</strong> will be cancelled (3 available, 2 scheduled)"),
        "{}",
        confirm.body
    );
    let done = post(&app, &format!("{BILLING}/bulk/cancel"), Proof::Htmx, "state=scheduled").await;
    assert!(done.body.contains("2 tasks cancelled"), "{}", done.body);
    assert_eq!(
        states(&db).await,
        [("available".to_string(), 3), ("cancelled".to_string(), 2), ("discarded".to_string(), 2)]
    );
    let nothing = get(&app, &format!("{BILLING}/bulk/discard?state=scheduled")).await;
    assert!(nothing.body.contains("No tasks match: there is nothing to discard."), "{}", nothing.body);
}

#[tokio::test]
async fn read_only_mounts_no_action_and_offers_none() {
    let (db, ids) = seeded().await;
    let app = sluice_web::router(WebState::new(db.pool.clone()).read_only(true));
    let before = states(&db).await;

    for path in [
        format!("{BILLING}/pause"),
        format!("{BILLING}/resume"),
        format!("{BILLING}/tasks/{}/retry", ids[0]),
        format!("{BILLING}/tasks/{}/cancel", ids[5]),
        format!("{BILLING}/bulk/retry"),
        format!("{BILLING}/selected/retry"),
        format!("{BILLING}/reset"),
    ] {
        let status = post(&app, &path, Proof::Htmx, "state=discarded").await.status;
        assert!(status == 404 || status == 405, "{path}: {status}");
    }
    assert_eq!(get(&app, &format!("{BILLING}/bulk/retry?state=discarded")).await.status, 404);
    assert_eq!(get(&app, &format!("{BILLING}/reset?to=beginning")).await.status, 404);
    assert!(!sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap().paused);
    assert_eq!(states(&db).await, before);

    for path in [BILLING.to_string(), format!("{BILLING}/tasks"), format!("{BILLING}/tasks/{}", ids[0])] {
        let page = get(&app, &path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains("read-only"), "{path}");
        assert!(!page.body.contains(r#"method="post""#), "{path} offers an action: {}", page.body);
        assert!(!page.body.contains("/bulk/"), "{path} offers a bulk action");
    }
}

#[tokio::test]
async fn workers_are_listed_with_host_pid_status_and_heartbeat() {
    let (db, _) = seeded().await;
    let app = app(&db);
    let empty = get(&app, "/workers").await;
    assert_eq!(empty.status, 200);

    let handle = sluice::sub(&db.pool, Subscription::new("orders", "billing"), |_: Message<serde_json::Value>| async {
        Ok::<_, HandlerError>(())
    })
    .await
    .unwrap();
    support::wait_until(Duration::from_secs(20), "the worker's row", || async {
        !sluice::list_workers(&db.pool, None, None).await.unwrap().is_empty()
    })
    .await;
    let worker = sluice::list_workers(&db.pool, None, None).await.unwrap().remove(0);
    let page = get(&app, "/workers").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&format!("<td>{}</td>", worker.host)), "{}", page.body);
    assert!(page.body.contains(&format!(r#"<td class="n">{}</td>"#, std::process::id())), "{}", page.body);
    assert!(page.body.contains(&format!("<code>{}</code>", handle.worker_id().0)), "{}", page.body);
    assert!(page.body.contains(r#"<a href="/streams/orders/consumers/billing">billing</a>"#), "{}", page.body);
    assert!(
        page.body.contains(r#"class="badge active""#) || page.body.contains(r#"class="badge idle""#),
        "{}",
        page.body
    );
    let consumer = get(&app, BILLING).await;
    assert!(
        consumer.body.contains(&format!("<code>{}</code>", handle.worker_id().0)),
        "its workers: {}",
        consumer.body
    );
    handle.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn basic_auth_guards_the_dashboard() {
    use base64::Engine;
    let db = TestDb::new().await;
    let app = sluice_serve::require_basic_auth(app(&db), "admin:s3cret".parse().unwrap());
    let with = |credentials: &str| {
        let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials));
        Request::get("/").header(header::AUTHORIZATION, value).body(Body::empty()).unwrap()
    };

    let page = get(&app, "/").await;
    assert_eq!(page.status, 401);
    assert!(page.headers[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Basic "));
    assert!(!page.body.contains("Overview"));
    assert_eq!(send(&app, with("admin:wrong")).await.status, 401);
    let page = send(&app, with("admin:s3cret")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<h1>Overview</h1>"), "{}", page.body);
}

#[tokio::test]
async fn nested_under_a_path_its_links_stay_inside() {
    let (db, ids) = seeded().await;
    let app = Router::new().nest("/queue", sluice_web::router(WebState::new(db.pool.clone()).base_path("/queue/")));
    let page = get(&app, "/queue").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"href="/queue/workers""#), "{}", page.body);
    assert!(page.body.contains(r#"href="/queue/streams/orders/consumers/billing""#), "{}", page.body);
    assert!(page.body.contains(&format!(r#"src="/queue{}""#, sluice_web::HTMX_PATH)), "{}", page.body);
    let task = get(&app, &format!("/queue{BILLING}/tasks/{}", ids[0])).await;
    assert!(task.body.contains(&format!(r#"action="/queue{BILLING}/tasks/{}/retry""#, ids[0])), "{}", task.body);
    assert_eq!(get(&app, &format!("/queue{}", sluice_web::HTMX_PATH)).await.status, 200);
}

#[tokio::test]
async fn the_tasks_page_leads_to_a_consumers_tasks_with_the_filter() {
    let (db, _) = seeded().await;
    let app = app(&db);
    let page = get(&app, "/tasks").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"<option value="orders/billing">billing (stream orders)</option>"#), "{}", page.body);

    let chosen = get(&app, "/tasks?consumer=orders%2Fbilling&state=discarded&subject=orders.us.%2A").await;
    assert_eq!(chosen.status, 303, "{}", chosen.body);
    let target = chosen.location.unwrap();
    assert_eq!(target, format!("{BILLING}/tasks?state=discarded&subject=orders.us.*"));
    let list = get(&app, &target).await;
    assert_eq!(count(&list.body, "badge discarded"), 2, "{}", list.body);

    let unknown = get(&app, "/tasks?consumer=orders%2Fnope").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("consumer &quot;nope&quot; of stream &quot;orders&quot; does not exist"));
    let malformed = get(&app, "/tasks?consumer=billing").await;
    assert_eq!(malformed.status, 400);
    assert!(
        malformed.body.contains(r#"id="error-consumer">&quot;billing&quot; is not STREAM/CONSUMER"#),
        "{}",
        malformed.body
    );
}

#[tokio::test]
async fn the_tasks_ticked_in_the_list_are_steered_together() {
    let (db, ids) = seeded().await;
    let state = WebState::new(db.pool.clone());
    let token = state.csrf_token().to_string();
    let app = sluice_web::router(state);

    let list = get(&app, &format!("{BILLING}/tasks")).await;
    assert!(
        list.body.contains(&format!(r#"<input type="checkbox" name="event" value="{}">"#, ids[0])),
        "{}",
        list.body
    );
    assert!(list.body.contains(&format!(r#"formaction="{BILLING}/selected/cancel""#)), "{}", list.body);

    // Two dead letters and a scheduled task ticked: only the dead letters can be retried.
    let form = format!("event={}&event={}&event={}", ids[0], ids[3], ids[5]);
    let done = post(&app, &format!("{BILLING}/selected/retry"), Proof::Token(&token), &form).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("2 of 3 selected tasks retried."), "{}", done.body);
    assert!(done.body.contains("The others were not discarded or cancelled"), "{}", done.body);
    assert_eq!(state_of(&db, ids[0]).await, TaskState::Available);
    assert_eq!(state_of(&db, ids[3]).await, TaskState::Available);
    assert_eq!(state_of(&db, ids[5]).await, TaskState::Scheduled);
    assert_eq!(state_of(&db, ids[1]).await, TaskState::Discarded, "not ticked, not touched");

    let done = post(&app, &format!("{BILLING}/selected/discard"), Proof::Htmx, &format!("event={}", ids[6])).await;
    assert!(done.body.contains("1 of 1 selected task discarded."), "{}", done.body);
    assert_eq!(state_of(&db, ids[6]).await, TaskState::Discarded);

    // Nothing ticked, or a value that is not an event id: 400, nothing changed.
    let before = states(&db).await;
    for form in ["", "event=abc", &format!("event={}&event=-1", ids[5])] {
        let page = post(&app, &format!("{BILLING}/selected/cancel"), Proof::Htmx, form).await;
        assert_eq!(page.status, 400, "{form:?}: {}", page.body);
        assert!(page.body.contains("nothing was changed"), "{}", page.body);
    }
    assert_eq!(states(&db).await, before);
}

async fn lag(db: &TestDb) -> i64 {
    sluice::queue_stats(&db.pool, Some("orders"), Some("billing")).await.unwrap().consumers[0].lag_events
}

#[tokio::test]
async fn a_position_reset_names_what_it_replays_before_it_moves() {
    let (db, ids) = seeded().await;
    let state = WebState::new(db.pool.clone());
    let token = state.csrf_token().to_string();
    let app = sluice_web::router(state);
    assert_eq!(lag(&db).await, 0, "every event made into a task");

    let page = get(&app, BILLING).await;
    assert!(page.body.contains(&format!(r#"action="{BILLING}/reset""#)), "{}", page.body);
    let confirm = get(&app, &format!("{BILLING}/reset?to=beginning")).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("every event the stream holds (7 now) again."), "{}", confirm.body);
    let from_event = get(&app, &format!("{BILLING}/reset?to={}", ids[5])).await;
    assert!(from_event.body.contains(&format!("the events from event {} on again.", ids[5])), "{}", from_event.body);
    let since = get(&app, &format!("{BILLING}/reset?to=2026-01-01T00:00:00Z")).await;
    assert!(since.body.contains("the events published since 2026-01-01 00:00:00 UTC again."), "{}", since.body);
    assert_eq!(lag(&db).await, 0, "a confirmation changes nothing");

    for bad in ["soon", "0", ""] {
        let page = get(&app, &format!("{BILLING}/reset?to={bad}")).await;
        assert_eq!(page.status, 400, "{bad:?}: {}", page.body);
        assert!(page.body.contains(r#"id="error-to""#), "{}", page.body);
        let page = post(&app, &format!("{BILLING}/reset"), Proof::Htmx, &format!("to={bad}")).await;
        assert_eq!(page.status, 400, "{bad:?}: {}", page.body);
    }
    assert_eq!(lag(&db).await, 0, "nothing moved");

    let done = post(&app, &format!("{BILLING}/reset"), Proof::Token(&token), "to=beginning").await;
    assert_eq!((done.status, done.location.as_deref()), (303, Some(BILLING)), "{}", done.body);
    assert_eq!(lag(&db).await, 7, "the stream's events are ahead of the consumer again");
    assert_eq!(get(&app, "/streams/orders/consumers/nope/reset?to=now").await.status, 404);
}

/// Completed and failed tasks (of the consumer, of every consumer) over
/// the last hour.
async fn hour(db: &TestDb, consumer: Option<&str>) -> (i64, i64) {
    let minutes = sluice::throughput(&db.pool, consumer.map(|_| "orders"), consumer, 60).await.unwrap();
    assert_eq!(minutes.len(), 60, "one entry a minute");
    (minutes.iter().map(|m| m.completed).sum(), minutes.iter().map(|m| m.failed).sum())
}

/// The throughput history behind the chart: a worker's completions and
/// failures reach it with its heartbeats, and its last ones when it stops
/// (before its first heartbeat here); the overview and the consumer page
/// chart the hour.
#[tokio::test]
async fn the_last_hours_completions_and_failures_are_charted() {
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", StreamOptions::default()).await.unwrap();
    sluice::create_consumer(&db.pool, "orders", "billing", ConsumerOptions::default().max_attempts(1)).await.unwrap();
    sluice::create_consumer(&db.pool, "orders", "audit", ConsumerOptions::default().include(["nothing.>"]))
        .await
        .unwrap();
    let events = (0..10).map(|i| NewEvent::new(if i < 7 { "orders.eu.ok" } else { "orders.eu.fail" }, &i).unwrap());
    sluice::publish_batch(&db.pool, "orders", events).await.unwrap();
    let handler = |msg: Message<serde_json::Value>| async move {
        if msg.subject().ends_with(".fail") {
            Err(HandlerError::discard("the tax table is missing"))
        } else {
            Ok(())
        }
    };
    let quiet =
        Subscription::new("orders", "billing").heartbeat(Duration::from_secs(300)).dead_after(Duration::from_secs(900));
    let handle = sluice::sub(&db.pool, quiet, handler).await.unwrap();
    support::wait_until(Duration::from_secs(30), "7 completed, 3 dead letters", || async {
        states(&db).await == [("discarded".to_string(), 3)]
    })
    .await;
    assert_eq!(hour(&db, Some("billing")).await, (0, 0), "no heartbeat yet");
    handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(hour(&db, Some("billing")).await, (7, 3), "the worker's last word");

    let beating = Subscription::new("orders", "billing").heartbeat(Duration::from_millis(200));
    let handle = sluice::sub(&db.pool, beating, handler).await.unwrap();
    let events = (0..5).map(|i| NewEvent::new("orders.us.ok", &i).unwrap());
    sluice::publish_batch(&db.pool, "orders", events).await.unwrap();
    support::wait_until(Duration::from_secs(30), "5 more through heartbeats", || async {
        hour(&db, Some("billing")).await == (12, 3)
    })
    .await;
    assert_eq!(hour(&db, Some("audit")).await, (0, 0), "another consumer's history is its own");
    assert_eq!(hour(&db, None).await, (12, 3));

    let app = app(&db);
    for path in ["/", BILLING] {
        let page = get(&app, path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains(r#"<strong class="completed-total">12</strong>"#), "{path}: {}", page.body);
        assert!(page.body.contains(r#"<strong class="failed-total">3</strong>"#), "{path}: {}", page.body);
    }
    let audit = get(&app, "/streams/orders/consumers/audit").await;
    assert!(audit.body.contains(r#"<strong class="completed-total">0</strong>"#), "{}", audit.body);
    handle.shutdown(Duration::from_secs(5)).await;

    // Bad input: named errors.
    let no_stream = sluice::throughput(&db.pool, None, Some("billing"), 60).await.unwrap_err();
    assert!(no_stream.to_string().contains("give the stream too"), "{no_stream}");
    let too_long = sluice::throughput(&db.pool, None, None, 0).await.unwrap_err();
    assert!(too_long.to_string().contains("invalid minutes: 0 is outside 1..=1440"), "{too_long}");
    let unknown = sluice::throughput(&db.pool, Some("orders"), Some("nosuch"), 60).await.unwrap_err();
    assert!(unknown.to_string().contains("consumer \"nosuch\""), "{unknown}");
}

/// The sessions of this database that last ran a LISTEN: the dashboard's watcher.
async fn listening(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// The next server-sent event's text, or `None` when none comes within `wait`.
async fn next_event(body: &mut axum::body::BodyDataStream, wait: Duration) -> Option<String> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + wait;
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, body.next()).await.ok()??.unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Keep-alive comments (`:`) are not events.
        if text.contains("event:") && text.ends_with("\n\n") {
            return Some(text);
        }
    }
}

/// Pages refresh when the queue changes: `/live` sends `refresh` events fed
/// from one LISTEN connection however many pages listen, closed once none
/// does; in poll-only mode pages poll instead and `/live` does not exist.
#[tokio::test]
async fn pages_refresh_on_changes_from_one_listen_connection() {
    let (db, _) = seeded().await;
    let app = app(&db);
    let page = get(&app, "/").await;
    assert!(page.body.contains(r#"hx-ext="sse" sse-connect="/live""#), "{}", page.body);
    assert!(page.body.contains(r#"hx-trigger="sse:refresh""#), "{}", page.body);
    assert!(page.body.contains(&format!(r#"src="{}""#, sluice_web::SSE_PATH)), "{}", page.body);
    assert_eq!(get(&app, sluice_web::SSE_PATH).await.status, 200);

    let open = |app: Router| async move {
        let response = app.oneshot(Request::get("/live").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
        response.into_body().into_data_stream()
    };
    let mut first = open(app.clone()).await;
    let mut second = open(app.clone()).await;
    support::wait_until(Duration::from_secs(10), "the watcher listening", || async { listening(&db).await == 1 }).await;
    // A publish notifies: both pages hear of it well before the quiet refresh.
    let connected = tokio::time::Instant::now();
    sluice::publish(&db.pool, "orders", NewEvent::new("orders.eu.new", &1).unwrap()).await.unwrap();
    for body in [&mut first, &mut second] {
        let event = next_event(body, sluice_web::QUIET_REFRESH).await.expect("a refresh after the publish");
        // Browsers drop an event without a data line: it must have one.
        assert!(event.contains("event: refresh\ndata: refresh\n"), "{event:?}");
    }
    assert!(connected.elapsed() < sluice_web::QUIET_REFRESH, "the refresh came from the notification");
    assert_eq!(listening(&db).await, 1, "one LISTEN connection for both pages");
    drop((first, second));
    support::wait_until(sluice_web::QUIET_REFRESH * 3, "the LISTEN connection closed", || async {
        listening(&db).await == 0
    })
    .await;

    let polling = sluice_web::router(WebState::new(db.pool.clone()).poll_only(true));
    let page = get(&polling, "/").await;
    assert!(page.body.contains(r#"hx-trigger="every 5s""#), "{}", page.body);
    assert!(!page.body.contains("sse-connect"), "{}", page.body);
    assert_eq!(get(&polling, "/live").await.status, 404);
}

/// A completed task is deleted on ack (by default): its page says so and
/// still shows the log, rather than a bare "not found".
#[tokio::test]
async fn a_retried_task_that_completed_and_was_deleted_shows_its_log() {
    let (db, ids) = seeded().await;
    let app = app(&db);
    let dead = ids[3];
    let retried = post(&app, &format!("{BILLING}/tasks/{dead}/retry"), Proof::Htmx, "reason=fixed").await;
    assert_eq!(retried.status, 303, "{}", retried.body);
    let handle = sluice::sub(&db.pool, Subscription::new("orders", "billing"), |_: Message<serde_json::Value>| async {
        Ok::<_, HandlerError>(())
    })
    .await
    .unwrap();
    support::wait_until(Duration::from_secs(30), "the retried task completed and deleted", || async {
        matches!(sluice::get_task(&db.pool, "orders", "billing", dead).await, Err(sluice::Error::TaskNotFound { .. }))
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await;
    let page = get(&app, &format!("{BILLING}/tasks/{dead}")).await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(
        page.body.contains("The task is no longer stored. A completed task is deleted when it is acked"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<td>retried</td><td>fixed</td>"), "{}", page.body);
    let never = get(&app, &format!("{BILLING}/tasks/999999")).await;
    assert_eq!(never.status, 404);
    assert!(!never.body.contains("no longer stored"), "{}", never.body);
}
