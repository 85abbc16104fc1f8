//! The `sluice` command. Parsing and error printing only; the work is in `cli::run`.

use clap::Parser;

mod cleanup;
mod cli;
mod consumer;
mod gateway;
mod migrate;
mod output;
mod partitions;
mod publish;
mod serve;
mod stats;
mod stream;
mod tasks;
mod workers;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opt = match cli::Opt::try_parse() {
        Ok(opt) => opt,
        Err(e) => return cli::usage_error(e),
    };
    cli::init_tracing(opt.verbose);
    match cli::run(opt).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
