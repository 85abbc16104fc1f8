//! The `sluice` binary as a user runs it: exit codes, what it prints, and the
//! state it leaves in the database.
//!
//! The binary belongs to the `sluice-cli` package, so Cargo does not build it
//! for these tests (`CARGO_BIN_EXE_*` covers only the same package's
//! binaries); the first test to need it builds it once per test binary.

use std::path::PathBuf;
use std::process::Output;

use sqlx::PgPool;
use support::{sluice_tables, TestDb, SLUICE_TABLES as TABLES};
use tokio::process::Command;
use tokio::sync::OnceCell;

static BINARY: OnceCell<PathBuf> = OnceCell::const_new();

/// The workspace's target folder: `CARGO_TARGET_DIR` when set, else `target/`.
fn target_dir() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    }
}

/// The `sluice` binary, built (or brought up to date) once per test binary.
async fn binary() -> &'static PathBuf {
    BINARY
        .get_or_init(|| async {
            let target = target_dir();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let built = Command::new(cargo)
                .args(["build", "--quiet", "-p", "sluice-cli", "--bin", "sluice", "--manifest-path"])
                .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .output()
                .await
                .expect("run cargo build");
            assert!(
                built.status.success(),
                "cargo build -p sluice-cli failed:\n{}",
                String::from_utf8_lossy(&built.stderr)
            );
            let path = target.join("debug").join(format!("sluice{}", std::env::consts::EXE_SUFFIX));
            assert!(path.is_file(), "no sluice binary at {}", path.display());
            path
        })
        .await
}

/// A `sluice` command with a clean environment: no `DATABASE_URL` unless the
/// test sets one, and no `RUST_LOG` to add lines to stderr.
async fn sluice() -> Command {
    let mut cmd = Command::new(binary().await);
    cmd.env_remove("DATABASE_URL").env_remove("RUST_LOG").kill_on_drop(true);
    cmd
}

/// What one run printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts a clean success: exit 0 and nothing on stderr.
    fn success(self, what: &str) -> Run {
        assert_eq!(self.code, Some(0), "{what}: exit code\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert_eq!(self.stderr, "", "{what}: nothing on stderr");
        self
    }

    /// Asserts a failure the way a user should see it: exit 1 and exactly one
    /// line `error: ...` on stderr, no panic, no backtrace. Returns the line.
    fn failure(self, what: &str) -> String {
        assert_eq!(self.code, Some(1), "{what}: exit code\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: exactly one line on stderr, got:\n{}", self.stderr);
        assert!(self.stderr.ends_with('\n'), "{what}: the line ends with a newline: {:?}", self.stderr);
        let line = lines[0];
        assert!(line.starts_with("error: "), "{what}: starts with `error: `: {line}");
        assert!(line.len() > "error: ".len(), "{what}: says what went wrong: {line}");
        let lower = self.stderr.to_lowercase();
        assert!(!lower.contains("panicked"), "{what}: panicked: {line}");
        assert!(!lower.contains("backtrace"), "{what}: backtrace: {line}");
        assert_eq!(self.stdout, "", "{what}: nothing on stdout");
        line.to_string()
    }
}

/// Runs `sluice --database-url <url> <args>`.
async fn run_with_url(url: &str, args: &[&str]) -> Run {
    Run::from(sluice().await.arg("--database-url").arg(url).args(args).output().await.expect("run sluice"))
}

async fn schema_exists(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'sluice')")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The line of `migrate status` for one version, split on whitespace.
fn status_line(stdout: &str, version: i64) -> Vec<String> {
    let lines: Vec<Vec<String>> =
        stdout.lines().map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>()).collect();
    let found: Vec<&Vec<String>> = lines.iter().filter(|l| l.first() == Some(&version.to_string())).collect();
    assert_eq!(found.len(), 1, "one status line for version {version} in:\n{stdout}");
    found[0].clone()
}

#[tokio::test]
async fn migrate_up_status_down_all_and_up_again() {
    let db = TestDb::empty().await;

    let status = run_with_url(&db.url, &["migrate", "status"]).await.success("status before up");
    let line = status_line(&status.stdout, 1);
    assert_eq!(line.last().map(String::as_str), Some("pending"), "migration 1 pending: {line:?}");
    assert!(!schema_exists(&db.pool).await, "status creates nothing");

    let up = run_with_url(&db.url, &["migrate", "up"]).await.success("up");
    assert!(up.stdout.lines().any(|l| l == "applied 1"), "up says it applied 1:\n{}", up.stdout);
    assert_eq!(sluice_tables(&db.pool).await, TABLES);

    let again = run_with_url(&db.url, &["migrate", "up"]).await.success("up again");
    assert!(!again.stdout.contains("applied"), "a second up applies nothing:\n{}", again.stdout);
    assert!(again.stdout.contains("up to date"), "a second up says so:\n{}", again.stdout);

    let status = run_with_url(&db.url, &["migrate", "status"]).await.success("status after up");
    let line = status_line(&status.stdout, 1);
    assert!(line.iter().any(|w| w == "applied"), "migration 1 applied: {line:?}");
    assert!(!status.stdout.contains("pending"), "nothing pending after up:\n{}", status.stdout);

    let down = run_with_url(&db.url, &["migrate", "down", "--all"]).await.success("down --all");
    assert!(down.stdout.lines().any(|l| l == "reverted 1"), "down says it reverted 1:\n{}", down.stdout);
    assert!(!schema_exists(&db.pool).await, "schema sluice gone after down --all");

    let nothing = run_with_url(&db.url, &["migrate", "down", "--all"]).await.success("down --all on nothing");
    assert!(!nothing.stdout.contains("reverted"), "nothing to revert:\n{}", nothing.stdout);

    let status = run_with_url(&db.url, &["migrate", "status"]).await.success("status after down");
    let line = status_line(&status.stdout, 1);
    assert_eq!(line.last().map(String::as_str), Some("pending"), "migration 1 pending again: {line:?}");

    let up = run_with_url(&db.url, &["migrate", "up"]).await.success("up after down --all");
    assert!(up.stdout.lines().any(|l| l == "applied 1"), "up applies 1 again:\n{}", up.stdout);
    assert_eq!(sluice_tables(&db.pool).await, TABLES);

    // Plain `down` reverts only the newest migration.
    let newest = || async {
        let history: Option<i64> = if schema_exists(&db.pool).await {
            sqlx::query_scalar("SELECT max(version) FROM sluice._migrations").fetch_one(&db.pool).await.unwrap()
        } else {
            None
        };
        history
    };
    let latest = newest().await.expect("migrations applied");
    assert!(latest > 1, "more than one migration to revert");
    run_with_url(&db.url, &["migrate", "down"]).await.success("down");
    assert_eq!(newest().await, Some(latest - 1), "plain down reverts one migration");
}

#[tokio::test]
async fn database_url_from_the_environment() {
    let db = TestDb::empty().await;

    let up = Run::from(sluice().await.env("DATABASE_URL", &db.url).args(["migrate", "up"]).output().await.unwrap())
        .success("up with DATABASE_URL");
    assert!(up.stdout.lines().any(|l| l == "applied 1"), "up applied 1:\n{}", up.stdout);
    assert_eq!(sluice_tables(&db.pool).await, TABLES);

    let status =
        Run::from(sluice().await.env("DATABASE_URL", &db.url).args(["migrate", "status"]).output().await.unwrap())
            .success("status with DATABASE_URL");
    assert!(status_line(&status.stdout, 1).iter().any(|w| w == "applied"), "applied:\n{}", status.stdout);

    // The flag wins over the environment.
    let other = TestDb::empty().await;
    Run::from(
        sluice()
            .await
            .env("DATABASE_URL", &db.url)
            .args(["--database-url", &other.url, "migrate", "up"])
            .output()
            .await
            .unwrap(),
    )
    .success("flag and env");
    assert_eq!(sluice_tables(&other.pool).await, TABLES, "the flag's database was migrated");

    Run::from(sluice().await.env("DATABASE_URL", &db.url).args(["migrate", "down", "--all"]).output().await.unwrap())
        .success("down --all with DATABASE_URL");
    assert!(!schema_exists(&db.pool).await, "schema gone after down --all");
    assert!(schema_exists(&other.pool).await, "the other database was not touched");
}

/// The test server's URL with another user and database.
async fn url_on_server(user: &str, password: Option<&str>, database: &str) -> String {
    use sqlx::ConnectOptions;
    let mut opts = support::server().await.clone().username(user).database(database);
    if let Some(password) = password {
        opts = opts.password(password);
    }
    opts.to_url_lossy().to_string()
}

#[tokio::test]
async fn bad_connections_fail_with_one_line() {
    let missing_db =
        url_on_server("postgres", None, &format!("sluice_missing_{}", uuid::Uuid::new_v4().simple())).await;
    let missing_role =
        url_on_server(&format!("sluice_nobody_{}", uuid::Uuid::new_v4().simple()), None, "postgres").await;
    // With a password, in case the server asks for one: the role still does not exist.
    let missing_role_pw =
        url_on_server(&format!("sluice_nobody_{}", uuid::Uuid::new_v4().simple()), Some("x"), "postgres").await;

    let cases: [(&str, &str, &[&str]); 7] = [
        ("connection refused", "postgres://postgres@127.0.0.1:1/x", &["refused"]),
        ("missing database", &missing_db, &["does not exist"]),
        ("missing role", &missing_role, &["role", "does not exist", "password authentication failed"]),
        ("missing role with password", &missing_role_pw, &["role", "does not exist", "password authentication failed"]),
        ("malformed URL", "nonsense", &["invalid database url"]),
        ("not a Postgres URL", "mysql://root@127.0.0.1:3306/x", &["must start with postgres://"]),
        ("empty URL", "", &["no database given"]),
    ];
    for (what, url, expect) in cases {
        for args in [&["migrate", "up"][..], &["migrate", "status"], &["migrate", "down", "--all"]] {
            let line = run_with_url(url, args).await.failure(&format!("{what}, {args:?}"));
            let lower = line.to_lowercase();
            assert!(
                expect.iter().any(|e| lower.contains(e)),
                "{what}, {args:?}: the line says what failed (one of {expect:?}): {line}"
            );
        }
    }

    // No URL at all: neither flag nor environment.
    let none = Run::from(sluice().await.args(["migrate", "up"]).output().await.unwrap()).failure("no URL");
    assert!(none.contains("DATABASE_URL") && none.contains("--database-url"), "says how to give one: {none}");
}

#[tokio::test]
async fn missing_privileges_fail_with_one_line() {
    let db = TestDb::empty().await;
    let role = format!("sluice_noperm_{}", uuid::Uuid::new_v4().simple());
    let password = uuid::Uuid::new_v4().simple().to_string();

    sqlx::query(&format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")).execute(&db.pool).await.unwrap();
    sqlx::query(&format!("REVOKE CREATE ON DATABASE \"{}\" FROM PUBLIC", db.name())).execute(&db.pool).await.unwrap();
    sqlx::query(&format!("GRANT CONNECT ON DATABASE \"{}\" TO \"{role}\"", db.name())).execute(&db.pool).await.unwrap();
    let url = url_on_server(&role, Some(&password), db.name()).await;

    let up = run_with_url(&url, &["migrate", "up"]).await;
    let down = run_with_url(&url, &["migrate", "down", "--all"]).await;
    let schema_after = schema_exists(&db.pool).await;

    // Clean up before asserting, so a failure leaves no role behind.
    sqlx::query(&format!("REVOKE ALL ON DATABASE \"{}\" FROM \"{role}\"", db.name())).execute(&db.pool).await.unwrap();
    sqlx::query(&format!("DROP OWNED BY \"{role}\"")).execute(&db.pool).await.unwrap();
    sqlx::query(&format!("DROP ROLE \"{role}\"")).execute(&db.pool).await.unwrap();

    let line = up.failure("up without CREATE");
    assert!(line.contains("permission denied"), "says permission denied: {line}");
    assert!(!schema_after, "nothing was created");
    // Down on a database without Sluice has nothing to do, privileges or not.
    down.success("down --all without CREATE on an empty database");
}
