//! `sluice-bench`: Sluice's benchmark harness. This file only parses the
//! options and hands over: to [`run::run`] for a benchmark run, or to
//! [`worker::run`] for the hidden `worker` subcommand that the `scale`
//! scenario starts in child processes.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cluster;
mod db;
mod machine;
mod peers;
mod report;
mod run;
mod scenario;
mod work;
mod worker;

#[tokio::main]
async fn main() -> ExitCode {
    let opt = cli::Opt::parse();
    run::init_tracing();
    let result = match opt.command {
        Some(cli::Command::Worker(args)) => worker::run(args).await,
        None => run::run(opt.bench).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
