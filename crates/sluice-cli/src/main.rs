//! The `sluice` command. Parsing and error printing only; the work is in `run`.

use clap::Parser;

mod cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opt = cli::Opt::parse();
    cli::init_tracing(opt.verbose);
    match cli::run(opt).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
