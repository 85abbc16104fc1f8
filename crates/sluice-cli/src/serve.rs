//! `sluice serve`: the dashboard, `/metrics` and `/healthz` over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use sluice_serve::BasicAuth;
use sqlx::PgPool;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on, e.g. 127.0.0.1:9187 or 0.0.0.0:9187.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9187")]
    listen: SocketAddr,

    /// Serve the dashboard without its actions: no pause, resume, retry,
    /// cancel or discard (their routes do not exist).
    #[arg(long)]
    read_only: bool,

    /// Require HTTP basic auth for the dashboard (/metrics and /healthz stay
    /// open for Prometheus and probes). Prefer the environment variable: a
    /// command line is visible to every user of the machine.
    #[arg(long, value_name = "USER:PASS", env = "SLUICE_BASIC_AUTH", hide_env_values = true)]
    basic_auth: Option<BasicAuth>,

    /// Never show events' payloads and metadata on the dashboard.
    #[arg(long)]
    hide_payloads: bool,

    /// Refresh dashboard pages every few seconds instead of when the queue
    /// changes (no LISTEN connection): for a database reached through a
    /// pooler in transaction mode, where LISTEN does not work.
    #[arg(long)]
    poll_only: bool,

    /// Do not serve the gateway at /gateway (WebSocket clients logging in with
    /// keys added by `sluice gateway key add`; docs/GATEWAY.md).
    #[arg(long)]
    no_gateway: bool,

    /// Database connections the server may hold at once, shared by the
    /// dashboard, /metrics and the gateway (whose subscriptions' fetches
    /// take turns on half of them, so that key checks, publishes and
    /// heartbeats always find one).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub pool_size: u32,

    #[command(flatten)]
    gateway_limits: GatewayLimits,
}

/// The gateway's limits (docs/GATEWAY.md); the defaults are
/// `sluice_gateway::Limits::default()`. Each but the auth timeout and the
/// cap on connections logging in is sent to a client in its welcome.
#[derive(Debug, Args)]
#[command(next_help_heading = "Gateway limits")]
struct GatewayLimits {
    /// The largest frame a client may send, in bytes (a bigger one closes
    /// the connection with frame_too_large).
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..=64 * 1024 * 1024))]
    gateway_max_frame_bytes: u32,

    /// The most events in one publish.
    #[arg(long, value_name = "EVENTS", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    gateway_max_batch: u32,

    /// The most connections one key may have open to this server.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    gateway_max_connections_per_key: u32,

    /// The most connections not logged in yet (from the upgrade to the
    /// welcome) this server holds at once; past it, upgrades get HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    gateway_max_unauthenticated: u32,

    /// The most credit (tasks in a client's hands) one subscription may have.
    #[arg(long, value_name = "TASKS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    gateway_max_credit: u32,

    /// How long a client has to answer the challenge with its hello.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    gateway_auth_timeout: Duration,

    /// How long a client may hold a delivered task without settling or
    /// extending it before that attempt fails (and the task is retried).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = positive_duration)]
    gateway_settle_timeout: Duration,
}

impl GatewayLimits {
    fn limits(&self) -> sluice_gateway::Limits {
        sluice_gateway::Limits::default()
            .max_frame_bytes(self.gateway_max_frame_bytes as usize)
            .max_batch(self.gateway_max_batch as usize)
            .max_connections_per_key(self.gateway_max_connections_per_key as usize)
            .max_unauthenticated(self.gateway_max_unauthenticated as usize)
            .max_credit(self.gateway_max_credit as usize)
            .auth_timeout(self.gateway_auth_timeout)
            .settle_timeout(self.gateway_settle_timeout)
    }
}

/// A duration of at least a second, as the other flags write them (30s, 5m).
fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| format!("{e} (write durations as 30s, 5m, 2h)"))?;
    if d < Duration::from_secs(1) {
        return Err("at least 1s".to_string());
    }
    Ok(d)
}

pub async fn run(pool: &PgPool, args: ServeArgs) -> Result<()> {
    let metrics = sluice_serve::install_recorder().context("installing the Prometheus recorder")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let web = sluice_web::WebState::new(pool.clone())
        .read_only(args.read_only)
        .hide_payloads(args.hide_payloads)
        .poll_only(args.poll_only);
    let mut dashboard = sluice_web::router(web);
    if let Some(auth) = args.basic_auth {
        dashboard = sluice_serve::require_basic_auth(dashboard, auth);
    }
    let mut app = sluice_serve::router(sluice_serve::State::new(pool.clone(), metrics)).merge(dashboard);
    // The gateway has its own authentication (keys), not basic auth.
    let gateway = if args.no_gateway {
        String::new()
    } else {
        let gateway = sluice_gateway::GatewayState::with_limits(pool.clone(), args.gateway_limits.limits());
        app = app.merge(sluice_gateway::router(gateway));
        format!(", the gateway at ws://{address}{}", sluice_gateway::PATH)
    };
    // stdout, so a supervisor's log shows where to look.
    println!(
        "serving the dashboard at http://{address}/{gateway}, http://{address}/metrics and \
         http://{address}/healthz (Ctrl-C to stop)"
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    sluice_serve::serve_app(listener, app, shutdown).await.context("serving")
}
