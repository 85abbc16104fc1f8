//! What the numbers were measured on: the machine, the server and its
//! settings, the Sluice commit and the date.

use std::path::Path;
use std::process::Command;

use serde::Serialize;
use sqlx::PgConnection;

/// The server settings that move queue throughput the most. autovacuum
/// decides whether dead tuples and planner statistics are ever looked after.
const SETTINGS: [&str; 10] = [
    "shared_buffers",
    "synchronous_commit",
    "fsync",
    "wal_level",
    "max_connections",
    "work_mem",
    "checkpoint_timeout",
    "max_wal_size",
    "autovacuum",
    "deadlock_timeout",
];

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: Option<String>,
    pub memory_bytes: Option<u64>,
    pub load_average: Option<String>,
    pub postgres: String,
    pub settings: Vec<(String, String)>,
    /// `git rev-parse --short HEAD` of the workspace, when it is a checkout.
    pub commit: Option<String>,
    /// Whether the library (crates/sluice, migrations) had uncommitted changes
    /// at the time of the run: then the numbers are of that working tree.
    pub library_dirty: Option<bool>,
    pub date: String,
    /// The bench's databases, one per scenario (dropped at the end).
    pub databases: String,
}

impl Machine {
    pub async fn probe(conn: &mut PgConnection, databases: &str) -> anyhow::Result<Machine> {
        let postgres: String = sqlx::query_scalar("SELECT version()").fetch_one(&mut *conn).await?;
        let mut settings = Vec::with_capacity(SETTINGS.len());
        for name in SETTINGS {
            let value: String =
                sqlx::query_scalar("SELECT current_setting($1)").bind(name).fetch_one(&mut *conn).await?;
            settings.push((name.to_string(), value));
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let commit = git(&workspace, &["rev-parse", "--short", "HEAD"]);
        let library_dirty = git(&workspace, &["status", "--porcelain", "--", "crates/sluice", "migrations"])
            .map(|changes| !changes.is_empty());
        Ok(Machine {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu: proc_field("/proc/cpuinfo", "model name"),
            memory_bytes: proc_field("/proc/meminfo", "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
            postgres,
            settings,
            commit,
            library_dirty,
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            databases: databases.to_string(),
        })
    }

    pub fn human(&self) -> Vec<String> {
        let settings: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let commit = match (&self.commit, self.library_dirty) {
            (Some(c), Some(true)) => format!("{c} + uncommitted changes in crates/sluice or migrations"),
            (Some(c), _) => c.clone(),
            (None, _) => "unknown (not a git checkout)".to_string(),
        };
        vec![
            format!("cores         {}{}", self.cores, self.cpu.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()),
            format!(
                "memory        {}",
                self.memory_bytes.map(|b| crate::report::bytes(b as i64)).unwrap_or("?".into())
            ),
            format!("load average  {}", self.load_average.as_deref().unwrap_or("?")),
            format!("postgres      {}", self.postgres),
            format!("settings      {}", settings.join(" ")),
            format!("sluice        {commit}"),
            format!("date          {}", self.date),
            format!("databases     {}", self.databases),
        ]
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The value of the first `name: value` line of a /proc file.
fn proc_field(file: &str, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

/// Peak resident memory of this process (VmHWM), in kB.
pub fn peak_rss_kb() -> Option<u64> {
    proc_field("/proc/self/status", "VmHWM")?.trim_end_matches("kB").trim().parse().ok()
}
