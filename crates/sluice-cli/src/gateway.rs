//! `sluice gateway key add|list|revoke`: the keys of the gateway's clients
//! (docs/GATEWAY.md).

use anyhow::Result;
use clap::{Args, Subcommand};
use sqlx::PgPool;

use crate::output::{self, confirm, table, Out};

#[derive(Debug, Args)]
pub struct GatewayArgs {
    #[command(subcommand)]
    command: GatewayCommand,
}

#[derive(Debug, Subcommand)]
enum GatewayCommand {
    /// Register, list and revoke the Ed25519 keys clients log in with.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Register a client's public key and what it may do.
    Add {
        /// The key's name (letters, digits, `_` and `-`).
        name: String,
        /// The Ed25519 public key: 32 bytes in base64.
        #[arg(long, value_name = "KEY")]
        public_key: String,
        /// A stream it may publish to; repeat for more.
        #[arg(long, value_name = "STREAM")]
        publish: Vec<String>,
        /// A consumer it may take tasks from, as STREAM/CONSUMER; repeat for more.
        #[arg(long, value_name = "STREAM/CONSUMER")]
        consume: Vec<String>,
    },
    /// List every key, revoked ones too.
    List,
    /// Revoke a key: it cannot log in again, and its open connections are closed.
    Revoke {
        /// The key's name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

fn keys_table(keys: &[sluice_gateway::GatewayKey]) -> String {
    let mut t = table(["NAME", "PUBLIC KEY", "PUBLISH", "CONSUME", "CREATED", "REVOKED"]);
    for k in keys {
        t.add_row([
            k.name.clone(),
            k.public_key.clone(),
            k.publish.join(", "),
            k.consume.join(", "),
            output::time(Some(k.created_at)),
            output::time(k.revoked_at),
        ]);
    }
    t.to_string()
}

pub async fn run(pool: &PgPool, out: Out, args: GatewayArgs) -> Result<()> {
    let GatewayCommand::Key(command) = args.command;
    match command {
        KeyCommand::Add { name, public_key, publish, consume } => {
            let mut key = sluice_gateway::NewKey::new(name, public_key);
            for stream in publish {
                key = key.publish(stream);
            }
            for pair in &consume {
                let Some((stream, consumer)) = pair.split_once('/') else {
                    anyhow::bail!("invalid --consume: {pair:?} is not STREAM/CONSUMER");
                };
                key = key.consume(stream, consumer);
            }
            let added = sluice_gateway::add_key(pool, key).await?;
            out.print(&added, || format!("gateway key {:?} added", added.name))
        }
        KeyCommand::List => {
            let keys = sluice_gateway::list_keys(pool).await?;
            out.print(&keys, || if keys.is_empty() { "no gateway keys".to_string() } else { keys_table(&keys) })
        }
        KeyCommand::Revoke { name, yes } => {
            confirm(yes, &format!("Revoke gateway key {name:?}? Its clients cannot log in again."))?;
            let revoked = sluice_gateway::revoke_key(pool, &name).await?;
            out.print(&revoked, || format!("gateway key {:?} revoked", revoked.name))
        }
    }
}
