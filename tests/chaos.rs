//! Chaos: Sluice's guarantees under the faults production brings (issue 6).
//!
//! - worker processes killed with SIGKILL while they work, in both ack modes;
//! - Postgres restarted (a private cluster of the test's own) mid-processing;
//! - many publishing transactions committing out of order, some rolled back;
//! - a transaction pinning the xmin horizon while 200,000 tasks go through.
//!
//! Slow by design, so not part of a plain `cargo test` (`test = false` in
//! Cargo.toml): run it with `cargo test --test chaos` (`just chaos`). Arguments
//! after `--` pick tests by substring (`-- crash`) or leave some out
//! (`-- --skip restart`). Sizes come from `CHAOS_*` environment variables,
//! each named where it is read; the figures print at the end.
//!
//! This binary is also the crash test's worker: run with `SLUICE_CHAOS_WORKER`
//! set it subscribes and works until it is killed. (No libtest harness: the
//! worker must not run the tests again.)

#[path = "chaos/cluster.rs"]
mod cluster;
#[path = "chaos/crashes.rs"]
mod crashes;
#[path = "chaos/ordering.rs"]
mod ordering;
#[path = "chaos/restart.rs"]
mod restart;
#[path = "chaos/xmin.rs"]
mod xmin;

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

type TestFn = fn() -> Pin<Box<dyn Future<Output = ()>>>;

/// Set in the environment of a worker process: its ack mode.
const WORKER_ENV: &str = "SLUICE_CHAOS_WORKER";

/// Every figure the tests report, in order: (test, figure, value).
static FIGURES: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

/// Totals over the tests, in the order first reported.
static TOTALS: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

fn main() {
    // RUST_LOG=sluice=info shows what the subscribers do (workers too).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if let Ok(mode) = std::env::var(WORKER_ENV) {
        rt.block_on(crashes::worker(mode));
        return;
    }
    let tests: [(&str, TestFn); 5] = [
        ("worker_crashes_transactional_ack", || Box::pin(crashes::run(crashes::Mode::Transactional))),
        ("worker_crashes_implicit_ack", || Box::pin(crashes::run(crashes::Mode::Implicit))),
        ("postgres_restart", || Box::pin(restart::run())),
        ("out_of_order_commits", || Box::pin(ordering::run())),
        ("pinned_xmin", || Box::pin(xmin::run())),
    ];
    let (filters, skips) = parse_args();
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .filter(|(name, _)| !skips.iter().any(|s| name.contains(s.as_str())))
        .collect();
    println!("running {} chaos tests", selected.len());
    let suite = Instant::now();
    let mut failed = 0;
    for (name, test) in &selected {
        println!("--- {name}");
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(test())));
        figure(name, "runtime", secs(started.elapsed()));
        println!("test {name} ... {}", if result.is_ok() { "ok" } else { "FAILED" });
        failed += usize::from(result.is_err());
    }
    print_figures(suite.elapsed());
    println!("{} passed, {failed} failed", selected.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}

/// Test-name filters and `--skip` names; other flags (from cargo) are ignored.
fn parse_args() -> (Vec<String>, Vec<String>) {
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--skip" {
            skips.extend(args.next());
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    (filters, skips)
}

/// Records a figure of `test` and prints it at once.
pub fn figure(test: &str, name: &str, value: impl Display) {
    let value = value.to_string();
    println!("    {name}: {value}");
    FIGURES.lock().expect("figures poisoned").push((test.to_string(), name.to_string(), value));
}

/// Adds `n` to the suite's total of `name` (events, kills, lost, ...).
pub fn tally(name: &'static str, n: u64) {
    let mut totals = TOTALS.lock().expect("totals poisoned");
    match totals.iter_mut().find(|(k, _)| *k == name) {
        Some((_, total)) => *total += n,
        None => totals.push((name, n)),
    }
}

fn print_figures(total: Duration) {
    let env: Vec<String> =
        std::env::vars().filter(|(k, _)| k.starts_with("CHAOS_")).map(|(k, v)| format!("{k}={v} ")).collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = if args.is_empty() { String::new() } else { format!(" -- {}", args.join(" ")) };
    println!();
    println!("chaos figures: {}cargo test --test chaos{args} (suite {})", env.concat(), secs(total));
    let totals = TOTALS.lock().expect("totals poisoned");
    println!("  totals: {}", totals.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", "));
    let figures = FIGURES.lock().expect("figures poisoned");
    let mut last = "";
    for (test, name, value) in figures.iter() {
        if test != last {
            println!("  {test}");
            last = test;
        }
        println!("    {name:<46} {value}");
    }
}

/// A size or setting from the environment, or its default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

/// A duration as seconds with one decimal.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A rate per second.
pub fn rate(n: u64, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64().max(1e-9))
}
