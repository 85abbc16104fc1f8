//! `sluice serve`: `/metrics` and `/healthz` over HTTP (the dashboard joins them later).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use sqlx::PgPool;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on, e.g. 127.0.0.1:9187 or 0.0.0.0:9187.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9187")]
    listen: SocketAddr,
}

pub async fn run(pool: &PgPool, args: ServeArgs) -> Result<()> {
    let metrics = sluice_serve::install_recorder().context("installing the Prometheus recorder")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    // stdout, so a supervisor's log shows where to scrape.
    println!("serving http://{address}/metrics and http://{address}/healthz (Ctrl-C to stop)");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    sluice_serve::serve(listener, sluice_serve::State::new(pool.clone(), metrics), shutdown).await.context("serving")
}
