//! What `sluice serve` serves: `/metrics` for Prometheus and `/healthz`.
//!
//! The library's counters and histograms (see `sluice::metrics`) are
//! recorded in the processes that publish and subscribe; install
//! [`install_recorder`] there and mount [`router`] (or serve it with
//! [`serve`]) to expose them. The gauges that describe the queue as a whole
//! (lag, tasks by state, workers by status, the xmin horizon, dead rows) are
//! read from the database at each scrape, by one exporter: `sluice serve`,
//! or whichever of your processes mounts the router. Run one such
//! exporter per database, not one per worker.
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let metrics = sluice_serve::install_recorder()?;
//! let app = sluice_serve::router(sluice_serve::State::new(pool, metrics));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9187").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use axum::extract;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics::gauge;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use sqlx::PgPool;

mod auth;
mod gauges;

pub use auth::{require_basic_auth, BasicAuth};
pub use gauges::{collect, GAUGES};

/// Histogram buckets, in seconds, of every `*_duration_seconds` histogram:
/// from a millisecond (a fetch, an ack flush) to five minutes (a slow
/// handler, a task that waited for a backlog).
pub const BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// How long a scrape waits for the database's gauges before it answers
/// without them (and with `sluice_database_up 0`).
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs a Prometheus recorder as the process's global `metrics`
/// recorder, with [`BUCKETS`] for Sluice's histograms
/// (`sluice::metrics::HISTOGRAMS`). Gauges not set
/// for five minutes are dropped, so a deleted consumer's series go away.
/// Fails if the process already has a recorder.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for name in sluice::metrics::HISTOGRAMS {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_string()), BUCKETS)?;
    }
    builder.idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(300))).install_recorder()
}

/// What the routes need: the database and the recorder's handle.
#[derive(Clone)]
pub struct State {
    pool: PgPool,
    metrics: PrometheusHandle,
}

impl State {
    /// The routes' state, from a pool on Sluice's database and the handle
    /// [`install_recorder`] returned.
    pub fn new(pool: PgPool, metrics: PrometheusHandle) -> State {
        State { pool, metrics }
    }
}

/// `/metrics` (Prometheus text format: this process's recorded metrics and
/// the database's gauges, read at the scrape) and `/healthz` (200 when the
/// database answers, 503 with the reason when it does not).
pub fn router(state: State) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).with_state(state)
}

async fn metrics(extract::State(state): extract::State<State>) -> impl IntoResponse {
    let up = match tokio::time::timeout(COLLECT_TIMEOUT, collect(&state.pool)).await {
        Ok(Ok(())) => 1.0,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading the queue's gauges failed");
            0.0
        }
        Err(_) => {
            tracing::warn!(timeout = ?COLLECT_TIMEOUT, "reading the queue's gauges timed out");
            0.0
        }
    };
    gauge!(gauges::DATABASE_UP).set(up);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn healthz(extract::State(state): extract::State<State>) -> impl IntoResponse {
    let check = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool);
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok\n".to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database: no answer within 5 s\n".to_string()),
    }
}

/// Serves [`router`] on `listener` until `shutdown` completes; requests
/// under way are finished first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_app(listener, router(state), shutdown).await
}

/// Serves `app` (usually [`router`] merged with other routes, such as the
/// dashboard's) on `listener` until `shutdown` completes; requests under way
/// are finished first.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
