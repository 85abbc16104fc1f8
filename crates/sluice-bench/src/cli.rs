//! Command-line options, and the sizes they resolve to (`--smoke` and
//! `--peers` change the defaults; an explicit flag always wins).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::work::SubConfig;

const LOCAL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Benchmarks Sluice against a fresh database it creates (and drops) on the
/// server of `--database-url`, or on a private cluster (`--private-cluster`).
#[derive(Debug, Parser)]
#[command(name = "sluice-bench", version, args_conflicts_with_subcommands = true)]
pub struct Opt {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One worker process of the `scale` scenario (started by the bench itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// N events in batches, events/s (1 and more publishers).
    Publish,
    /// Single-event publishes from many clients at once: commits/s of a plain INSERT, of an
    /// INSERT with a NOTIFY in every transaction, and of `sluice::publish`.
    Single,
    /// N published events drained by one consumer, then by 2 consumers (fan-out).
    Drain,
    /// A steady publish rate: publish → handler start, p50/p90/p99/max.
    Latency,
    /// Publishing and draining at once for many tasks: throughput per window.
    Soak,
    /// The drain before, during and after a transaction that pins the xmin horizon.
    Pinned,
    /// The drain with 1, 2, 4 worker processes.
    Scale,
    /// Ten subscribers with nothing to do: transactions per second against the server, with
    /// notifications and poll-only.
    Idle,
    /// A backlog where 1 event in `--selective-every` matches the consumer's filter:
    /// drain time and fetch round trips.
    Selective,
    /// A steady publish rate drained by one consumer: a clean phase, then an idle-in-transaction
    /// pin, an overload, long REPEATABLE READ readers and a burst, each followed by a recovery.
    Pressure,
    /// Publish, drain and latency through the WebSocket gateway, beside the library in process.
    Gateway,
    /// The drain of a consumer ordered by key (FIFO per key) beside an unordered one, with few
    /// and with many keys.
    Fifo,
    /// Every scenario above.
    All,
}

impl Scenario {
    pub const EACH: [Scenario; 12] = [
        Scenario::Publish,
        Scenario::Single,
        Scenario::Drain,
        Scenario::Latency,
        Scenario::Soak,
        Scenario::Pinned,
        Scenario::Scale,
        Scenario::Idle,
        Scenario::Selective,
        Scenario::Pressure,
        Scenario::Gateway,
        Scenario::Fifo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Publish => "publish",
            Scenario::Single => "single",
            Scenario::Drain => "drain",
            Scenario::Latency => "latency",
            Scenario::Soak => "soak",
            Scenario::Pinned => "pinned",
            Scenario::Scale => "scale",
            Scenario::Idle => "idle",
            Scenario::Selective => "selective",
            Scenario::Pressure => "pressure",
            Scenario::Gateway => "gateway",
            Scenario::Fifo => "fifo",
            Scenario::All => "all",
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The server to benchmark on; the bench creates its own database there.
    #[arg(long, env = "DATABASE_URL", default_value = LOCAL, hide_env_values = true)]
    pub database_url: String,

    /// Start a private Postgres cluster for this run (initdb into a temporary directory, a free port,
    /// autovacuum on and production-like settings) and benchmark on it instead of `--database-url`;
    /// stopped and removed at the end. Needs the server binaries: PG_BINDIR, `pg_config --bindir`
    /// or /usr/lib/postgresql/*/bin. (`--keep-db` does not go with it: the databases go with the cluster.)
    #[arg(long, conflicts_with = "keep_db")]
    pub private_cluster: bool,

    /// Scenarios to run (repeat the flag, or `all`, the default).
    #[arg(long = "scenario", short = 's', value_enum)]
    pub scenarios: Vec<Scenario>,

    /// Shrinks every scenario to seconds: checks the harness, not the speed (CI).
    #[arg(long)]
    pub smoke: bool,

    /// One JSON object per scenario per line on stdout; everything else on stderr.
    #[arg(long)]
    pub json: bool,

    /// publish: events per run [default: 200000; smoke 5000; with --peers the peers' N].
    #[arg(long)]
    pub publish_n: Option<u64>,

    /// Events per publish_batch call (publish, and the untimed backlogs of the other scenarios).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,

    /// publish: numbers of concurrent publishers to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub publishers: Vec<usize>,

    /// single: numbers of concurrent clients to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    pub single_clients: Vec<usize>,

    /// single: seconds each way (insert, insert + notify, publish) [default: 5; smoke 1].
    #[arg(long)]
    pub single_secs: Option<f64>,

    /// drain: events published before the subscribers start [default: 100000; smoke 5000; with --peers 20000].
    #[arg(long)]
    pub drain_n: Option<u64>,

    /// Subscribers per consumer, in this process (drain, latency, soak, pinned).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,

    /// Handlers running at once per subscriber (Subscription::concurrency).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,

    /// Tasks per claim (Subscription::batch_size).
    #[arg(long, default_value_t = 1000)]
    pub claim_batch: usize,

    /// Claimed tasks waiting for a free handler (Subscription::prefetch) [default: the claim batch].
    #[arg(long)]
    pub prefetch: Option<usize>,

    /// Subscription::poll_interval in milliseconds (notifications wake subscribers sooner).
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,

    /// Subscribers as `Subscription::new` makes them: none of --concurrency, --claim-batch,
    /// --prefetch, --poll-interval-ms applies (the drain measures the defaults beside the tuned
    /// setting either way).
    #[arg(long)]
    pub defaults: bool,

    /// Run every Sluice statement as under PgBouncer before 1.21 in transaction pooling
    /// (`sluice::set_pooling(Pooling::Transactions)`: each in a transaction of its own, unnamed,
    /// subscribers poll), straight to the server: what those extra round trips cost.
    #[arg(long)]
    pub pooling_transactions: bool,

    /// drain: consumers of the fan-out variant.
    #[arg(long, default_value_t = 2)]
    pub fanout: usize,

    /// latency: events published per second, one event per publish call.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,

    /// latency: seconds of steady publishing [default: 10; smoke 1].
    #[arg(long)]
    pub duration: Option<f64>,

    /// latency: connections the publish calls share (concurrent publishers).
    #[arg(long, default_value_t = 8)]
    pub latency_publishers: u32,

    /// soak: tasks through [default: 1000000; smoke 20000].
    #[arg(long)]
    pub soak_n: Option<u64>,

    /// soak: tasks per throughput window [default: 100000; smoke 2000].
    #[arg(long)]
    pub soak_window: Option<u64>,

    /// soak: how far the publisher may run ahead of the handlers [default: 200000; smoke 5000].
    #[arg(long)]
    pub soak_ahead: Option<u64>,

    /// Event retention of every stream the bench creates, in seconds [default: the library's, 7 days].
    #[arg(long, value_name = "SECS")]
    pub event_retention_secs: Option<u64>,

    /// Transaction ids per partition of sluice.events, maintained every second, in every bench
    /// database [default: the library's, 1,000,000, every 5 s]. Small values show retention at work.
    #[arg(long, value_name = "TXIDS")]
    pub partition_span: Option<i64>,

    /// pinned: events drained in each phase [default: 100000; smoke 3000].
    #[arg(long)]
    pub pinned_n: Option<u64>,

    /// pinned: skip the VACUUM of sluice.tasks and sluice.events after the pin is released.
    #[arg(long)]
    pub no_vacuum: bool,

    /// scale: events drained per process count [default: 100000; smoke 3000].
    #[arg(long)]
    pub scale_n: Option<u64>,

    /// scale: numbers of worker processes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub processes: Vec<usize>,

    /// selective: events published before the subscriber starts [default: 1000000; smoke 20000].
    #[arg(long)]
    pub selective_n: Option<u64>,

    /// fifo: events per drain [default: 20000; smoke 2000].
    #[arg(long)]
    pub fifo_n: Option<u64>,

    /// fifo: numbers of distinct keys, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "50,5000")]
    pub fifo_keys: Vec<u64>,

    /// selective: one event in this many matches the consumer's subject filter.
    #[arg(long, default_value_t = 1000)]
    pub selective_every: u64,

    /// pressure: the normal publish rate, events/s [default: 25 % of the drain rate measured at the start].
    #[arg(long)]
    pub pressure_rate: Option<u64>,

    /// pressure: events published, then drained by the subscribers, to measure the drain rate
    /// at the start [default: 100000; smoke 3000].
    #[arg(long)]
    pub pressure_calibrate_n: Option<u64>,

    /// pressure: seconds of every phase at once (clean, pin, overload, readers, burst); a
    /// per-phase flag wins over it [default: 60, 240, 60, 120, 300; smoke 2, 2, 1, 2, 1].
    #[arg(long)]
    pub pressure_phase_secs: Option<f64>,

    /// pressure: seconds of the clean phase (normal rate, no pressure).
    #[arg(long)]
    pub pressure_clean_secs: Option<f64>,

    /// pressure: seconds of the `pin` phase (an idle-in-transaction session holds the xmin horizon).
    #[arg(long)]
    pub pressure_pin_secs: Option<f64>,

    /// pressure: seconds of the `overload` phase (publishing at 1.5× the drain rate).
    #[arg(long)]
    pub pressure_overload_secs: Option<f64>,

    /// pressure: seconds of the `readers` phase (4 REPEATABLE READ readers of another table).
    #[arg(long)]
    pub pressure_readers_secs: Option<f64>,

    /// pressure: seconds of the `burst` phase (publishing at --pressure-burst-factor × the normal rate).
    #[arg(long)]
    pub pressure_burst_secs: Option<f64>,

    /// pressure: the burst's publish rate, in multiples of the normal rate.
    #[arg(long, default_value_t = 3.0)]
    pub pressure_burst_factor: f64,

    /// pressure: how long each recovery may take (the backlog back to its clean level, the normal
    /// rate continuing) before it is given up and reported [default: 300; smoke 3].
    #[arg(long)]
    pub pressure_recovery_secs: Option<f64>,

    /// Also run the peers (`<peers-dir>/run-all.sh`) with the drain's N, and print them beside Sluice.
    #[arg(long)]
    pub peers: bool,

    /// Where run-all.sh lives [default: <workspace>/../shared/peers].
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,

    /// With --peers: read the peers' lines from this file (saved run-all.sh output)
    /// instead of running them again.
    #[arg(long, requires = "peers")]
    pub peers_results: Option<PathBuf>,

    /// Give up on a drain that has not finished after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,

    /// A setting for the bench databases, `NAME=VALUE` (repeatable): `ALTER DATABASE … SET NAME = 'VALUE'`
    /// before each scenario, e.g. `synchronous_commit=off` or `log_min_duration_statement=0`.
    #[arg(long = "db-set", value_name = "NAME=VALUE", value_parser = parse_setting)]
    pub db_settings: Vec<(String, String)>,

    /// Leave the database in place at the end (to look at it with psql).
    #[arg(long)]
    pub keep_db: bool,
}

/// Everything a run measures with, after `--smoke` and `--peers` are applied.
/// Printed at the start and included in every JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub scenarios: Vec<Scenario>,
    pub smoke: bool,
    pub publish_n: u64,
    pub batch: usize,
    pub publishers: Vec<usize>,
    pub single_clients: Vec<usize>,
    pub single_secs: f64,
    pub drain_n: u64,
    pub workers: usize,
    pub concurrency: usize,
    pub claim_batch: usize,
    pub prefetch: usize,
    pub poll_interval_ms: u64,
    pub defaults: bool,
    pub pooling_transactions: bool,
    pub fanout: usize,
    pub rate: u64,
    pub duration_s: f64,
    pub latency_publishers: u32,
    pub soak_n: u64,
    pub soak_window: u64,
    pub soak_ahead: u64,
    pub event_retention_secs: Option<u64>,
    pub partition_span: Option<i64>,
    pub pinned_n: u64,
    pub vacuum_after_pin: bool,
    pub scale_n: u64,
    pub processes: Vec<usize>,
    pub selective_n: u64,
    pub selective_every: u64,
    pub fifo_n: u64,
    pub fifo_keys: Vec<u64>,
    pub pressure: PressureParams,
    pub peers: bool,
    pub timeout_s: u64,
    pub db_settings: Vec<(String, String)>,
}

impl BenchArgs {
    pub fn params(&self) -> anyhow::Result<Params> {
        let smoke = self.smoke;
        let pick = |explicit: Option<u64>, full: u64, small: u64| explicit.unwrap_or(if smoke { small } else { full });
        let mut scenarios: Vec<Scenario> = if self.scenarios.is_empty() || self.scenarios.contains(&Scenario::All) {
            Scenario::EACH.to_vec()
        } else {
            self.scenarios.clone()
        };
        scenarios.sort();
        scenarios.dedup();
        // The peers are compared at one N (20,000 in their README): Sluice's
        // publish and drain use the same N unless told otherwise.
        let peers_default = if self.peers && !smoke { Some(20_000) } else { None };
        let p = Params {
            scenarios,
            smoke,
            publish_n: self.publish_n.or(peers_default).unwrap_or(if smoke { 5_000 } else { 200_000 }),
            batch: self.batch,
            publishers: self.publishers.clone(),
            single_clients: self.single_clients.clone(),
            single_secs: self.single_secs.unwrap_or(if smoke { 1.0 } else { 5.0 }),
            drain_n: self.drain_n.or(peers_default).unwrap_or(if smoke { 5_000 } else { 100_000 }),
            workers: self.workers,
            concurrency: self.concurrency,
            claim_batch: self.claim_batch,
            prefetch: self.prefetch.unwrap_or(self.claim_batch),
            poll_interval_ms: self.poll_interval_ms,
            defaults: self.defaults,
            pooling_transactions: self.pooling_transactions,
            fanout: self.fanout,
            rate: self.rate,
            duration_s: self.duration.unwrap_or(if smoke { 1.0 } else { 10.0 }),
            latency_publishers: self.latency_publishers,
            soak_n: pick(self.soak_n, 1_000_000, 20_000),
            soak_window: pick(self.soak_window, 100_000, 2_000),
            soak_ahead: pick(self.soak_ahead, 200_000, 5_000),
            event_retention_secs: self.event_retention_secs,
            partition_span: self.partition_span,
            pinned_n: pick(self.pinned_n, 100_000, 3_000),
            vacuum_after_pin: !self.no_vacuum,
            scale_n: pick(self.scale_n, 100_000, 3_000),
            processes: self.processes.clone(),
            selective_n: pick(self.selective_n, 1_000_000, 20_000),
            selective_every: self.selective_every,
            fifo_n: pick(self.fifo_n, 20_000, 2_000),
            fifo_keys: self.fifo_keys.clone(),
            pressure: self.pressure_params(),
            peers: self.peers,
            timeout_s: self.timeout,
            db_settings: self.db_settings.clone(),
        };
        p.check()?;
        Ok(p)
    }

    fn pressure_params(&self) -> PressureParams {
        let smoke = self.smoke;
        let secs = |explicit: Option<f64>, full: f64, small: f64| {
            explicit.or(self.pressure_phase_secs).unwrap_or(if smoke { small } else { full })
        };
        PressureParams {
            rate: self.pressure_rate,
            calibrate_n: self.pressure_calibrate_n.unwrap_or(if smoke { 3_000 } else { 100_000 }),
            clean_s: secs(self.pressure_clean_secs, 60.0, 2.0),
            pin_s: secs(self.pressure_pin_secs, 240.0, 2.0),
            overload_s: secs(self.pressure_overload_secs, 60.0, 1.0),
            readers_s: secs(self.pressure_readers_secs, 120.0, 2.0),
            burst_s: secs(self.pressure_burst_secs, 300.0, 1.0),
            burst_factor: self.pressure_burst_factor,
            recovery_s: self.pressure_recovery_secs.unwrap_or(if smoke { 3.0 } else { 300.0 }),
        }
    }
}

/// The `pressure` scenario's sizes.
#[derive(Debug, Clone, Serialize)]
pub struct PressureParams {
    /// The normal publish rate; `None`: 25 % of the drain rate measured at the start.
    pub rate: Option<u64>,
    pub calibrate_n: u64,
    pub clean_s: f64,
    pub pin_s: f64,
    pub overload_s: f64,
    pub readers_s: f64,
    pub burst_s: f64,
    pub burst_factor: f64,
    pub recovery_s: f64,
}

impl Params {
    fn check(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(self.batch >= 1, "--batch must be at least 1");
        ensure!(self.workers >= 1, "--workers must be at least 1");
        ensure!(self.fanout >= 1, "--fanout must be at least 1");
        ensure!(self.rate >= 1, "--rate must be at least 1");
        ensure!(self.duration_s > 0.0, "--duration must be more than 0");
        ensure!(self.latency_publishers >= 1, "--latency-publishers must be at least 1");
        ensure!(self.single_secs > 0.0, "--single-secs must be more than 0");
        ensure!(
            !self.single_clients.is_empty() && self.single_clients.iter().all(|&c| c >= 1),
            "--single-clients must list numbers of at least 1"
        );
        ensure!(self.soak_window >= 1 && self.soak_window <= self.soak_n, "--soak-window must be 1..=--soak-n");
        ensure!(self.soak_ahead >= self.batch as u64, "--soak-ahead must be at least one --batch");
        ensure!(self.publishers.iter().all(|&p| p >= 1), "--publishers must all be at least 1");
        ensure!(self.processes.iter().all(|&p| p >= 1), "--processes must all be at least 1");
        ensure!(self.selective_every >= 1, "--selective-every must be at least 1");
        ensure!(self.fifo_keys.iter().all(|k| *k >= 1), "every --fifo-keys must be at least 1");
        ensure!(
            self.selective_n >= self.selective_every,
            "--selective-n must be at least --selective-every, so that some event matches"
        );
        let pr = &self.pressure;
        ensure!(pr.rate != Some(0), "--pressure-rate must be at least 1");
        for s in [pr.clean_s, pr.pin_s, pr.overload_s, pr.readers_s, pr.burst_s, pr.recovery_s] {
            ensure!(s.is_finite() && s > 0.0, "every --pressure-*-secs must be more than 0");
        }
        ensure!(pr.burst_factor.is_finite() && pr.burst_factor > 0.0, "--pressure-burst-factor must be more than 0");
        for n in [
            self.publish_n,
            self.drain_n,
            self.soak_n,
            self.pinned_n,
            self.scale_n,
            self.selective_n,
            self.fifo_n,
            pr.calibrate_n,
        ] {
            ensure!(n >= 1, "every N must be at least 1");
        }
        Ok(())
    }

    pub fn sub_config(&self) -> SubConfig {
        SubConfig {
            concurrency: self.concurrency,
            claim_batch: self.claim_batch,
            prefetch: self.prefetch,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            defaults: self.defaults,
            poll_only: false,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return Err(format!("{name:?} is not a setting name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// The hidden worker subcommand: one subscriber in its own process. The
/// database URL comes in the environment (`DATABASE_URL`), so a password
/// never shows in `ps`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long)]
    pub stream: String,
    #[arg(long)]
    pub consumer: String,
    #[arg(long)]
    pub concurrency: usize,
    #[arg(long)]
    pub claim_batch: usize,
    #[arg(long)]
    pub prefetch: usize,
    #[arg(long)]
    pub poll_interval_ms: u64,
    /// `Subscription::new`'s defaults instead of the four settings above.
    #[arg(long)]
    pub defaults: bool,
    /// `sluice::set_pooling(Pooling::Transactions)` first.
    #[arg(long)]
    pub pooling_transactions: bool,
    /// Exit after handling this many tasks; 0 runs until stdin closes or the process is killed.
    #[arg(long, default_value_t = 0)]
    pub expect: u64,
}
