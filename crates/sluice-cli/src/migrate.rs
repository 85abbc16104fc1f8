//! `sluice migrate`: apply, revert and list Sluice's schema migrations.

use anyhow::Result;
use clap::{Args, Subcommand};
use sqlx::PgPool;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub command: MigrateCommand,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
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

pub async fn run(pool: &PgPool, command: MigrateCommand) -> Result<()> {
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
