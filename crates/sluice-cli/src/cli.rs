//! Commands of the `sluice` binary.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::cleanup::CleanupArgs;
use crate::consumer::ConsumerArgs;
use crate::gateway::GatewayArgs;
use crate::migrate::MigrateArgs;
use crate::output::Out;
use crate::partitions::PartitionsArgs;
use crate::publish::PublishArgs;
use crate::serve::ServeArgs;
use crate::stats::StatsArgs;
use crate::stream::StreamArgs;
use crate::tasks::TasksArgs;
use crate::workers::WorkersArgs;

/// Sluice: a transactional task queue in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Opt {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply, revert or inspect Sluice's schema migrations.
    Migrate(MigrateArgs),
    /// Create, list, show and delete streams.
    Stream(StreamArgs),
    /// Create, list, show, pause, resume, reset and delete consumers.
    Consumer(ConsumerArgs),
    /// Publish an event, or NDJSON events from a file.
    Publish(PublishArgs),
    /// List, show, retry, cancel and discard tasks.
    Tasks(TasksArgs),
    /// Lag, tasks and workers per consumer, and the database's health for a queue.
    Stats(StatsArgs),
    /// The subscribers, with their status and heartbeat.
    Workers(WorkersArgs),
    /// Run the subscribers' housekeeping by hand (retention, lost leases, due tasks).
    Cleanup(CleanupArgs),
    /// The events' partitions: list them, set their span and age.
    Partitions(PartitionsArgs),
    /// Serve the web dashboard, the gateway, /metrics (Prometheus) and /healthz over HTTP.
    Serve(ServeArgs),
    /// The gateway's client keys (docs/GATEWAY.md).
    Gateway(GatewayArgs),
}

/// Logs go to stderr; `RUST_LOG` overrides the level set by `-v`.
pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

pub async fn run(opt: Opt) -> Result<()> {
    // A command is one client at a time; `sluice serve` is many (dashboard
    // pages, scrapes, every gateway client's fetches and settles).
    let pool_size = match &opt.command {
        Command::Serve(args) => args.pool_size,
        _ => 2,
    };
    let pool = connect(opt.database_url.as_deref(), pool_size).await?;
    let out = Out { json: opt.json };
    match opt.command {
        Command::Migrate(args) => crate::migrate::run(&pool, args.command).await,
        Command::Stream(args) => crate::stream::run(&pool, out, args).await,
        Command::Consumer(args) => crate::consumer::run(&pool, out, args).await,
        Command::Publish(args) => crate::publish::run(&pool, out, args).await,
        Command::Tasks(args) => crate::tasks::run(&pool, out, args).await,
        Command::Stats(args) => crate::stats::run(&pool, out, args).await,
        Command::Workers(args) => crate::workers::run(&pool, out, args).await,
        Command::Cleanup(args) => crate::cleanup::run(&pool, out, args).await,
        Command::Partitions(args) => crate::partitions::run(&pool, out, args).await,
        Command::Serve(args) => crate::serve::run(&pool, args).await,
        Command::Gateway(args) => crate::gateway::run(&pool, out, args).await,
    }
}

async fn connect(url: Option<&str>, pool_size: u32) -> Result<PgPool> {
    let url =
        url.filter(|u| !u.trim().is_empty()).context("no database given: pass --database-url or set DATABASE_URL")?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        anyhow::bail!("invalid database URL: it must start with postgres:// or postgresql://");
    }
    let options: PgConnectOptions = url.parse().context("invalid database URL")?;
    // One direct connection first: a pool retries until its timeout and then
    // reports only that, hiding "connection refused" or "password failed".
    let probe = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(&options))
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to the database: no answer within 10 s"))?
        .map_err(describe_connect_error)?;
    probe.close().await.ok();
    Ok(PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options))
}

/// sqlx's connection errors are precise but nested; say what failed in one line.
fn describe_connect_error(e: sqlx::Error) -> anyhow::Error {
    match &e {
        sqlx::Error::Database(db) => anyhow::anyhow!("cannot connect to the database: {}", db.message()),
        sqlx::Error::Io(io) => anyhow::anyhow!("cannot connect to the database: {io}"),
        sqlx::Error::PoolTimedOut => anyhow::anyhow!("cannot connect to the database: timed out"),
        _ => anyhow::anyhow!("cannot connect to the database: {e}"),
    }
}

/// The error and its causes on one line, without the repetitions of nested
/// sqlx errors (each level often repeats the one below).
pub fn one_line(e: &anyhow::Error) -> String {
    // A library error names the thing and what is wrong; a database error
    // from sqlx says "error returned from database: " first.
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace("error returned from database: ", "");
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Help and version print as clap prints them (exit 0); a usage error is one
/// line on stderr, `error: …` with the `--help` to read, and exit 1, like
/// every other error.
pub fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return std::process::ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // `sluice stream`: the help is what the user wants, but it is not success.
        let _ = e.print();
        return std::process::ExitCode::FAILURE;
    }
    // clap's message runs until the blank line before its usage block; a
    // list of missing arguments comes on lines of its own.
    let text = e.render().to_string();
    let message: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("error: {message} (see --help)");
    std::process::ExitCode::FAILURE
}
