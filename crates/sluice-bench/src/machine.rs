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
    /// Whether the bench ran on a private cluster it started itself (`--private-cluster`)
    /// rather than on the server of `--database-url`.
    pub private_cluster: bool,
    /// With `--private-cluster`: every setting the bench wrote to the cluster's
    /// postgresql.conf, as the running server reports it (`current_setting`).
    /// Empty otherwise.
    pub private_cluster_settings: Vec<(String, String)>,
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
    /// `private_cluster`: the names of the settings the bench gave its private
    /// cluster (`--private-cluster`), read back from the server; `None` for the
    /// server of `--database-url`.
    pub async fn probe(
        conn: &mut PgConnection,
        databases: &str,
        private_cluster: Option<&[String]>,
    ) -> anyhow::Result<Machine> {
        let postgres: String = sqlx::query_scalar("SELECT version()").fetch_one(&mut *conn).await?;
        let mut settings = Vec::with_capacity(SETTINGS.len());
        for name in SETTINGS {
            settings.push((name.to_string(), setting(conn, name).await?));
        }
        let mut private_cluster_settings = Vec::new();
        for name in private_cluster.unwrap_or_default() {
            private_cluster_settings.push((name.clone(), setting(conn, name).await?));
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
            private_cluster: private_cluster.is_some(),
            private_cluster_settings,
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
            if self.private_cluster {
                let private: Vec<String> =
                    self.private_cluster_settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("cluster       private (--private-cluster): {}", private.join(" "))
            } else {
                "cluster       the server of --database-url (not a private cluster)".to_string()
            },
            format!("sluice        {commit}"),
            format!("date          {}", self.date),
            format!("databases     {}", self.databases),
        ]
    }
}

async fn setting(conn: &mut PgConnection, name: &str) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT current_setting($1)").bind(name).fetch_one(&mut *conn).await?)
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
