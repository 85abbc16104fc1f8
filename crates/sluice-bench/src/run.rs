//! A benchmark run: the private cluster if asked (`--private-cluster`), the
//! machine, then each scenario in a fresh database of its own (dropped
//! afterwards, also on error and Ctrl-C), then the peers if asked.

use anyhow::anyhow;
use sqlx::{ConnectOptions as _, Connection as _};
use tracing_subscriber::EnvFilter;

use crate::cli::{BenchArgs, Params};
use crate::cluster::PrivateCluster;
use crate::db::{self, BenchDb};
use crate::machine::Machine;
use crate::report::{Output, Report};
use crate::scenario::{self, Ctx};

/// Library warnings (failed flushes, lost leases) go to stderr; `RUST_LOG`
/// says more. sqlx's slow-acquire and slow-statement notices are left out
/// unless asked for: under load they drown everything else.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,sqlx::pool::acquire=error,sqlx::query=error"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let params = args.params()?;
    if params.pooling_transactions {
        sluice::set_pooling(sluice::Pooling::Transactions);
    }
    let _ = crate::work::STORAGE.set((params.event_retention_secs, params.partition_span));
    if !args.private_cluster {
        return bench(&args, &params, &args.database_url, None).await;
    }
    // The peers connect to 127.0.0.1:5432 themselves: run from here, they
    // would be measured on another server than Sluice.
    anyhow::ensure!(
        !params.peers || args.peers_results.is_some(),
        "--private-cluster with --peers: the peers would run on the shared server, not on the private cluster; \
         give their saved lines with --peers-results, or leave out --private-cluster"
    );
    let cluster = PrivateCluster::new()?;
    eprintln!("-- private cluster: initdb in {}, then {}", cluster.dir().display(), cluster.url());
    // Ctrl-C anywhere from here on ends the run through this select; the
    // cluster's drop then stops the server and removes the directory (the
    // bench databases go with it).
    tokio::select! {
        r = async {
            cluster.start().await?;
            let names: Vec<String> = cluster.settings().into_iter().map(|(name, _)| name).collect();
            bench(&args, &params, &cluster.url(), Some(&names)).await
        } => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    }
}

/// The run proper, on the server at `url`. `private_cluster`: the settings
/// the bench gave its private cluster, to report.
async fn bench(args: &BenchArgs, params: &Params, url: &str, private_cluster: Option<&[String]>) -> anyhow::Result<()> {
    let server = db::server(url)?;
    let run_id = format!("{}_{}", chrono::Utc::now().format("%Y%m%d_%H%M%S"), std::process::id());
    let mut conn = server.connect().await?;
    let machine = Machine::probe(&mut conn, &format!("sluice_bench_{run_id}_<scenario>"), private_cluster).await?;
    conn.close().await.ok();
    let out = Output::new(args.json, machine, params.clone());
    out.header();

    let mut reports: Vec<Report> = Vec::new();
    for &s in &params.scenarios {
        let db = BenchDb::create(&server, &run_id, s.name(), &params.db_settings).await?;
        let ctx = Ctx { db: &db, params, out: &out };
        let outcome = tokio::select! {
            r = scenario::run(s, &ctx) => r.map_err(|e| e.context(format!("scenario {}", s.name()))),
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        if args.keep_db {
            out.progress(&format!("database {} kept (--keep-db)", db.name()));
        } else if let Err(e) = db.drop_database().await {
            eprintln!("warning: could not drop database {}: {e:#}", db.name());
        }
        let report = outcome?;
        out.emit(&report);
        reports.push(report);
    }

    if params.peers {
        let peers = if let Some(file) = &args.peers_results {
            crate::peers::read(file)?
        } else {
            let dir = args.peers_dir.clone().unwrap_or_else(crate::peers::default_dir);
            tokio::select! {
                r = crate::peers::run(&dir, params.drain_n, &out) => r?,
                _ = tokio::signal::ctrl_c() => return Err(anyhow!("interrupted")),
            }
        };
        out.emit(&crate::peers::comparison(&peers, &reports, &out.commit_label()));
    }
    Ok(())
}
