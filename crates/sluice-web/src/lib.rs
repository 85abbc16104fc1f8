//! Sluice's web dashboard: server-rendered pages over the admin layer, as an
//! [`axum::Router`] to nest in your own app (behind your own auth layer) or to
//! run with `sluice serve`.
//!
//! Pages: the overview (streams, consumers with their lag, tasks by state,
//! the last hour's throughput, workers by status, dead letters), a stream, a
//! consumer (settings, position and lag, its throughput, pause and resume, a
//! position reset confirmed with what it replays, its workers), its tasks
//! (filtered by state, subject pattern, age and payload or metadata JSON
//! containment, paged by cursor; retry, cancel or discard one task, the
//! ticked ones, or all that match after a count), a task (its event, every
//! attempt's error, its log) and the workers. Pages refresh when the queue
//! changes, told by server-sent events (`/live`) from one LISTEN connection,
//! or on a timer ([`WebState::poll_only`]). htmx and its SSE extension are
//! embedded in the binary; nothing is fetched from elsewhere.
//!
//! Every POST must carry the dashboard's `SameSite=Strict` cookie (set with
//! every page), and the `HX-Request: true` header (htmx sends it) or the
//! process's CSRF token in a `csrf` form field, or it is refused with 403.
//! In [`WebState::read_only`] mode the action routes are not mounted.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let dashboard = sluice_web::router(sluice_web::WebState::new(pool).base_path("/queue").hide_payloads(true));
//! let app = axum::Router::new().nest("/queue", dashboard);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use sqlx::PgPool;

mod assets;
mod chart;
mod consumer;
mod csrf;
mod error;
mod filter;
mod layout;
mod live;
mod overview;
mod task;
mod tasks;
mod workers;

pub use assets::{HTMX_PATH, HTMX_VERSION, SSE_PATH, SSE_VERSION};
pub use live::{DEBOUNCE, QUIET_REFRESH};

/// How often the pages refresh themselves in [`WebState::poll_only`] mode.
pub const REFRESH_SECONDS: u32 = 5;

/// What the dashboard needs: the database and how much it may show and do.
#[derive(Clone)]
pub struct WebState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    base_path: String,
    hide_payloads: bool,
    read_only: bool,
    poll_only: bool,
    csrf_token: String,
    hub: Arc<live::Hub>,
}

impl WebState {
    /// The dashboard's state, on a pool on Sluice's database: payloads
    /// shown, actions allowed, mounted at the root.
    pub fn new(pool: PgPool) -> WebState {
        WebState {
            inner: Arc::new(Inner {
                pool,
                base_path: String::new(),
                hide_payloads: false,
                read_only: false,
                poll_only: false,
                csrf_token: csrf::new_token(),
                hub: Arc::default(),
            }),
        }
    }

    /// Where the router is nested (`/queue` for `.nest("/queue", …)`), so
    /// the pages' links and forms point inside it. Default: the root.
    pub fn base_path(self, path: &str) -> WebState {
        self.with(|inner| inner.base_path = path.trim_end_matches('/').to_string())
    }

    /// Never show events' payloads and metadata (sensitive data); subjects,
    /// errors and logs are still shown.
    pub fn hide_payloads(self, hide: bool) -> WebState {
        self.with(|inner| inner.hide_payloads = hide)
    }

    /// Look, don't touch: the routes that change anything (pause, resume,
    /// reset, retry, cancel, discard) are not mounted, and no page offers them.
    pub fn read_only(self, read_only: bool) -> WebState {
        self.with(|inner| inner.read_only = read_only)
    }

    /// Refresh pages every [`REFRESH_SECONDS`] instead of when the queue
    /// changes: no LISTEN connection, for a database reached through a
    /// pooler in transaction mode (where LISTEN does not work). By default
    /// pages listen to `/live`, server-sent events fed from one LISTEN
    /// connection, a refresh at most every [`DEBOUNCE`] and at least every
    /// [`QUIET_REFRESH`].
    pub fn poll_only(self, poll_only: bool) -> WebState {
        self.with(|inner| inner.poll_only = poll_only)
    }

    /// This process's CSRF token: a form that posts without htmx carries it
    /// in a `csrf` field. A fresh random one per process.
    pub fn csrf_token(&self) -> &str {
        &self.inner.csrf_token
    }

    fn with(self, change: impl FnOnce(&mut Inner)) -> WebState {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            pool: shared.pool.clone(),
            base_path: shared.base_path.clone(),
            hide_payloads: shared.hide_payloads,
            read_only: shared.read_only,
            poll_only: shared.poll_only,
            csrf_token: shared.csrf_token.clone(),
            hub: Arc::clone(&shared.hub),
        });
        change(&mut inner);
        WebState { inner: Arc::new(inner) }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub(crate) fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    pub(crate) fn is_poll_only(&self) -> bool {
        self.inner.poll_only
    }

    pub(crate) fn hub(&self) -> &Arc<live::Hub> {
        &self.inner.hub
    }

    pub(crate) fn payloads_hidden(&self) -> bool {
        self.inner.hide_payloads
    }

    /// A path inside the dashboard, as a link.
    pub(crate) fn href(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base_path)
    }
}

/// The dashboard's routes. Pages are GETs; in read-only mode the POST
/// routes (and the bulk confirmation pages) do not exist; in poll-only mode
/// neither does `/live`.
pub fn router(state: WebState) -> Router {
    let consumer = "/streams/{stream}/consumers/{consumer}";
    let mut router = Router::new()
        .route("/", get(overview::page))
        .route(HTMX_PATH, get(assets::htmx))
        .route(SSE_PATH, get(assets::sse))
        .route("/workers", get(workers::page))
        .route("/tasks", get(tasks::pick))
        .route("/streams/{stream}", get(overview::stream_page))
        .route(consumer, get(consumer::page))
        .route(&format!("{consumer}/tasks"), get(tasks::page))
        .route(&format!("{consumer}/tasks/{{event}}"), get(task::page));
    if !state.is_poll_only() {
        router = router.route("/live", get(live::events));
    }
    if !state.is_read_only() {
        let actions = Router::new()
            .route(&format!("{consumer}/pause"), post(consumer::pause))
            .route(&format!("{consumer}/resume"), post(consumer::resume))
            .route(&format!("{consumer}/reset"), get(consumer::confirm_reset).post(consumer::reset))
            .route(&format!("{consumer}/tasks/{{event}}/{{action}}"), post(task::act))
            .route(&format!("{consumer}/bulk/{{action}}"), get(tasks::confirm).post(tasks::act_on_all))
            .route(&format!("{consumer}/selected/{{action}}"), post(tasks::act_on_selected))
            .route_layer(axum::middleware::from_fn_with_state(state.clone(), csrf::guard));
        router = router.merge(actions);
    }
    router.layer(axum::middleware::from_fn_with_state(state.clone(), csrf::set_cookie)).with_state(state)
}
