//! A private Postgres cluster of the test's own, to restart at will without
//! touching the shared server. `initdb` into a temporary directory, a free
//! port, the socket in that directory; stopped and removed on drop.
//!
//! Postgres refuses to run as root: as root the tools run as `postgres`
//! (`runuser`), in a directory owned by it. The binaries come from
//! `PG_BINDIR`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// Initializes a new cluster (not started).
    pub async fn create() -> Cluster {
        let bin = bindir();
        let dir = std::env::temp_dir().join(format!("sluice-chaos-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).expect("create the cluster directory");
        let as_postgres = is_root();
        let cluster = Cluster { dir, bin, port: free_port(), as_postgres };
        if as_postgres {
            let status = std::process::Command::new("chown").arg("postgres:postgres").arg(&cluster.dir).status();
            assert!(status.is_ok_and(|s| s.success()), "chown the cluster directory to postgres");
        }
        let data = cluster.data();
        cluster.tool("initdb", &["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]).await;
        cluster
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        let log = self.dir.join("log").display().to_string();
        self.tool("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "-t", "60", "start"]).await;
    }

    /// Stops the server: `fast` (sessions terminated, clean shutdown) or
    /// `immediate` (processes killed, WAL replayed at the next start).
    pub async fn stop(&self, mode: &str) {
        self.tool("pg_ctl", &["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"]).await;
    }

    /// The URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    async fn tool(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().await.unwrap_or_else(|e| panic!("run {tool}: {e}"));
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            panic!(
                "{tool} {} failed ({}):\n{}{}\nserver log:\n{log}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let mut command = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        // Not running (already stopped) is fine.
        let _ = command.args(args).current_dir(&self.dir).stdout(Stdio::null()).stderr(Stdio::null()).status();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

fn bindir() -> PathBuf {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        let dir = PathBuf::from(dir);
        assert!(has_initdb(&dir), "PG_BINDIR={} holds no initdb", dir.display());
        return dir;
    }
    if let Ok(out) = std::process::Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return dir;
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
    found.pop().map(|(_, dir)| dir).unwrap_or_else(|| {
        panic!(
            "the Postgres restart test needs the server binaries (initdb, pg_ctl) to run a cluster of its own: \
             install PostgreSQL, set PG_BINDIR, or leave the test out with `-- --skip postgres_restart`"
        )
    })
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}
