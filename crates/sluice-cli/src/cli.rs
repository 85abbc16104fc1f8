//! Commands of the `sluice` binary.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// Sluice: a transactional task queue in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
pub struct Opt {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

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
}

#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(subcommand)]
    command: MigrateCommand,
}

#[derive(Debug, Subcommand)]
enum MigrateCommand {
    /// Apply every pending migration.
    Up,
    /// Revert the latest migration (all of them with --all).
    Down {
        /// Revert every migration: no Sluice table, type or function is left.
        #[arg(long)]
        all: bool,
    },
    /// List the migrations and whether each is applied.
    Status,
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
    let pool = connect(opt.database_url.as_deref()).await?;
    match opt.command {
        Command::Migrate(args) => migrate(&pool, args.command).await,
    }
}

async fn connect(url: Option<&str>) -> Result<PgPool> {
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
    Ok(PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(10)).connect_lazy_with(options))
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

async fn migrate(pool: &PgPool, command: MigrateCommand) -> Result<()> {
    match command {
        MigrateCommand::Up => {
            let applied = sluice::migrate(pool).await?;
            if applied.is_empty() {
                println!("Sluice schema is up to date");
            }
            for v in applied {
                println!("applied {v}");
            }
        }
        MigrateCommand::Down { all } => {
            let steps = if all { sluice::Steps::All } else { sluice::Steps::One };
            let reverted = sluice::migrate_down(pool, steps).await?;
            if reverted.is_empty() {
                println!("no Sluice migration is applied");
            }
            for v in reverted {
                println!("reverted {v}");
            }
        }
        MigrateCommand::Status => {
            for m in sluice::migration_status(pool).await? {
                let state = match m.applied_at {
                    Some(at) => format!("applied {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
                    None => "pending".to_string(),
                };
                println!("{:>4}  {:<24} {state}", m.version, m.description);
            }
        }
    }
    Ok(())
}

/// The error and its causes on one line, without the repetitions of nested
/// sqlx errors (each level often repeats the one below).
pub fn one_line(e: &anyhow::Error) -> String {
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
