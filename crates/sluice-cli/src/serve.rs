//! `sluice serve`: the dashboard, `/metrics` and `/healthz` over HTTP.

use std::net::SocketAddr;

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
        app = app.merge(sluice_gateway::router(sluice_gateway::GatewayState::new(pool.clone())));
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
