//! `--private-cluster`: a Postgres cluster of the bench's own, so that the
//! figures do not depend on how the shared server is tuned (on this machine
//! it runs with `autovacuum = off`). `initdb` into a fresh temporary
//! directory, a free port on 127.0.0.1, the socket in that directory, the
//! settings of [`SETTINGS`] appended to its postgresql.conf. Stopped
//! (`pg_ctl stop -m fast`) and removed when the guard is dropped: at the end of
//! the run, on error, on Ctrl-C and on a panic.
//!
//! Postgres refuses to run as root: as root the tools run as the `postgres`
//! OS user (`runuser`), in a directory owned by it. The binaries come from
//! `PG_BINDIR`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`. (The same approach as the chaos tests'
//! cluster, `tests/chaos/cluster.rs`.)

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _};
use tokio::process::Command;

/// What the private cluster runs with, besides the port and the socket
/// directory: a dedicated, production-like server on a machine with a few
/// GiB of RAM and an SSD. autovacuum is on and wakes often (the queue's
/// tables churn); durability is left alone (`fsync` and `synchronous_commit`
/// keep their defaults, on). Printed in the report's machine section.
pub const SETTINGS: [(&str, &str); 13] = [
    ("autovacuum", "on"),
    ("autovacuum_naptime", "10s"),
    ("autovacuum_vacuum_cost_limit", "2000"),
    ("shared_buffers", "1GB"),
    ("effective_cache_size", "4GB"),
    ("work_mem", "16MB"),
    ("maintenance_work_mem", "256MB"),
    ("max_connections", "200"),
    ("wal_buffers", "16MB"),
    ("checkpoint_timeout", "15min"),
    ("max_wal_size", "4GB"),
    ("random_page_cost", "1.1"),
    ("listen_addresses", "127.0.0.1"),
];

/// The cluster; a guard: dropping it stops the server and removes the directory.
pub struct PrivateCluster {
    /// The temporary directory: `data/` (the cluster) and `log` (the server log).
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Running as root: the tools run as `postgres`.
    as_postgres: bool,
}

impl PrivateCluster {
    /// Finds the binaries and creates the (empty) directory. Nothing runs yet;
    /// from here on, dropping the value cleans up.
    pub fn new() -> anyhow::Result<PrivateCluster> {
        let bin = bindir()?;
        let dir = unique_dir()?;
        let as_postgres = is_root();
        let cluster = PrivateCluster { dir, bin, port: free_port()?, as_postgres };
        if as_postgres {
            let status = std::process::Command::new("chown")
                .arg("postgres:postgres")
                .arg(&cluster.dir)
                .status()
                .context("running chown")?;
            ensure!(status.success(), "chown postgres:postgres {} failed ({status})", cluster.dir.display());
        }
        Ok(cluster)
    }

    /// `initdb`, the settings, `pg_ctl start`; returns once the server accepts connections.
    pub async fn start(&self) -> anyhow::Result<()> {
        let data = self.data().display().to_string();
        self.tool("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]).await?;
        let conf = self.data().join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .with_context(|| format!("opening {}", conf.display()))?;
        let mut text = String::from("\n# sluice-bench --private-cluster\n");
        for (name, value) in self.settings() {
            text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        file.write_all(text.as_bytes()).with_context(|| format!("writing {}", conf.display()))?;
        drop(file);
        let log = self.dir.join("log").display().to_string();
        self.tool("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "120", "start"]).await
    }

    /// Every setting written to postgresql.conf: [`SETTINGS`], the port and the socket directory.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = SETTINGS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        all.push(("port".into(), self.port.to_string()));
        all.push(("unix_socket_directories".into(), self.dir.display().to_string()));
        all
    }

    /// The URL the bench runs against instead of `--database-url`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, tool: &str) -> std::process::Command {
        let exe = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            std::process::Command::new(exe)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    async fn tool(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut command = Command::from(self.command(tool));
        let out = command.args(args).kill_on_drop(true).output().await.with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            bail!(
                "{tool} {} failed ({}):\n{}{}\nserver log:\n{log}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// `pg_ctl stop` in `mode`, quietly; whether it worked.
    fn stop(&self, mode: &str) -> bool {
        let data = self.data().display().to_string();
        self.command("pg_ctl")
            .args(["-D", &data, "-m", mode, "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // No postmaster.pid: never started (or already stopped).
        if self.data().join("postmaster.pid").exists() && !self.stop("fast") && !self.stop("immediate") {
            eprintln!("warning: could not stop the private cluster in {}", self.dir.display());
        }
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => eprintln!("-- private cluster stopped, {} removed", self.dir.display()),
            Err(e) => eprintln!("warning: could not remove {}: {e}", self.dir.display()),
        }
    }
}

/// `sluice-bench-<pid>-<nanoseconds>` in the temporary directory (`TMPDIR`, else /tmp).
fn unique_dir() -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn bindir() -> anyhow::Result<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        ensure!(has_initdb(&dir), "PG_BINDIR={} holds no initdb and pg_ctl", dir.display());
        return Ok(dir);
    }
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, dir)| has_initdb(dir))
        .collect();
    found.sort();
    match found.pop() {
        Some((_, dir)) => Ok(dir),
        None => bail!(
            "--private-cluster needs the Postgres server binaries (initdb, pg_ctl): install PostgreSQL's server \
             package or set PG_BINDIR"
        ),
    }
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}
