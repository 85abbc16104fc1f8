//! Test support: every test gets its own fresh database on a real Postgres.
//!
//! Where the server comes from, in order:
//! 1. `DATABASE_URL`, when set (tests create their databases on that server);
//! 2. a local server on 127.0.0.1:5432 (user `postgres`), if one answers;
//! 3. a Postgres container started with `testcontainers`, when Docker runs;
//! 4. otherwise the run stops with one line saying how to provide one.
//!
//! Databases are dropped when the `TestDb` is dropped, even if the test failed.
//!
//! With `SLUICE_TEST_PGBOUNCER=host:port`, a PgBouncer in transaction mode in
//! front of that server, each test's pool goes through it (statement cache
//! off, `sluice::Pooling::Transactions`), as a deployment behind PgBouncer
//! before 1.21 does; migrations and the tests' own side connections (`url`)
//! go to the server directly.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

const LOCAL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Connection options of the server the tests use (its maintenance database).
static SERVER: OnceCell<PgConnectOptions> = OnceCell::const_new();

/// The server, found once per test binary.
pub async fn server() -> &'static PgConnectOptions {
    SERVER.get_or_init(find_server).await
}

async fn find_server() -> PgConnectOptions {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let opts = PgConnectOptions::from_str(&url)
            .unwrap_or_else(|e| stop(&format!("DATABASE_URL is not a valid Postgres URL: {e}")));
        if let Err(e) = try_connect(&opts).await {
            stop(&format!("cannot connect to DATABASE_URL ({}): {e}", redact(&url)));
        }
        return opts;
    }
    let local = PgConnectOptions::from_str(LOCAL).expect("valid URL");
    if try_connect(&local).await.is_ok() {
        return local;
    }
    if let Some(opts) = container().await {
        return opts;
    }
    stop(
        "no Postgres for the tests: set DATABASE_URL (postgres://user:pass@host:port/db), \
         run one on 127.0.0.1:5432 (user postgres), or start Docker so testcontainers can (`just db-up`)",
    );
}

fn stop(line: &str) -> ! {
    eprintln!("sluice tests: {line}");
    std::process::exit(1);
}

fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((creds, rest)) if creds.contains(':') && creds.matches(':').count() > 1 => {
            let scheme_user = creds.rsplit_once(':').map(|(a, _)| a).unwrap_or(creds);
            format!("{scheme_user}:***@{rest}")
        }
        _ => url.to_string(),
    }
}

async fn try_connect(opts: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let conn = tokio::time::timeout(Duration::from_secs(3), PgConnection::connect_with(opts))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    conn.close().await
}

async fn container() -> Option<PgConnectOptions> {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::ImageExt;

    let docker_up = std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !docker_up {
        return None;
    }
    let container = Postgres::default().with_tag("15-alpine").start().await.ok()?;
    let port = container.get_host_port_ipv4(5432).await.ok()?;
    // Kept for the life of the test binary; testcontainers' reaper removes it after.
    Box::leak(Box::new(container));
    Some(
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .password("postgres")
            .database("postgres"),
    )
}

/// `SLUICE_TEST_PGBOUNCER` as (host, port), when set.
pub fn pgbouncer() -> Option<(String, u16)> {
    let value = std::env::var("SLUICE_TEST_PGBOUNCER").ok()?;
    let (host, port) = value
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
        .unwrap_or_else(|| stop(&format!("SLUICE_TEST_PGBOUNCER is not host:port: {value}")));
    Some((host, port))
}

/// A fresh database of its own for one test, dropped when this is dropped.
pub struct TestDb {
    /// A pool on the test's database: what the library gets (through
    /// PgBouncer under `SLUICE_TEST_PGBOUNCER`).
    pub pool: PgPool,
    /// A pool straight to the test's database, for the test's own SQL.
    pub direct: PgPool,
    /// The test database's URL (for child processes and the CLI).
    pub url: String,
    name: String,
}

impl TestDb {
    /// A new database with Sluice's migrations applied.
    pub async fn new() -> TestDb {
        let mut db = TestDb::empty().await;
        sluice::migrate(&db.pool).await.expect("Sluice migrations apply to a fresh database");
        if let Some(bouncer) = pgbouncer() {
            sluice::set_pooling(sluice::Pooling::Transactions);
            let opts = db.options().await.host(&bouncer.0).port(bouncer.1).statement_cache_capacity(0);
            let pool =
                PgPoolOptions::new().max_connections(20).connect_with(opts).await.expect("connect through PgBouncer");
            db.pool = pool;
        }
        db
    }

    /// A new, empty database (no migrations).
    pub async fn empty() -> TestDb {
        let server = server().await;
        let name = format!("sluice_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = server.connect().await.expect("connect to the test server");
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut admin).await.expect("create test database");
        admin.close().await.ok();
        let opts = server.clone().database(&name);
        let pool = PgPoolOptions::new().max_connections(20).connect_with(opts.clone()).await.expect("connect");
        let url = opts.to_url_lossy().to_string();
        TestDb { direct: pool.clone(), pool, url, name }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Options for more connections to this database.
    pub async fn options(&self) -> PgConnectOptions {
        server().await.clone().database(&self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let Some(server) = SERVER.get().cloned() else { return };
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // a short-lived thread with its own runtime drops the database.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut admin = server.connect().await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut admin).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Polls `check` every 20 ms until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sluice's tables right after migrating (partitions made ahead of the
/// next transaction id, `events_<txid>`, left out), as [`sluice_tables`] lists them.
pub const SLUICE_TABLES: [&str; 17] = [
    "_functions",
    "_migrations",
    "consumers",
    "event_partitioning",
    "event_partitions",
    "events",
    "events_0",
    "events_default",
    "freed_keys",
    "gateway_clients",
    "gateway_keys",
    "gateway_publishes",
    "streams",
    "task_log",
    "tasks",
    "throughput",
    "workers",
];

/// The tables in schema `sluice`, sorted, but the partitions made ahead
/// (named after the transaction id where they start).
pub async fn sluice_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'sluice' AND table_type = 'BASE TABLE'
           AND table_name !~ '^events_[1-9][0-9]*$'
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list Sluice's tables")
}

/// Tasks of a consumer by state, as `(state, count)` sorted by state.
pub async fn task_states(pool: &PgPool, consumer: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT t.state::text, count(*) FROM sluice.tasks t JOIN sluice.consumers c ON c.id = t.consumer_id
         WHERE c.name = $1 GROUP BY 1 ORDER BY 1",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await
    .expect("count tasks")
}

/// Subscribes with a handler that records each payload's number `n` into
/// `seen` and acks.
pub async fn record_n(
    pool: &PgPool,
    subscription: sluice::Subscription,
    seen: &std::sync::Arc<std::sync::Mutex<Vec<i64>>>,
) -> sluice::SubscriberHandle {
    let seen = seen.clone();
    sluice::sub(pool, subscription, move |msg: sluice::Message<serde_json::Value>| {
        let seen = seen.clone();
        async move {
            seen.lock().expect("seen poisoned").push(msg.payload()["n"].as_i64().expect("a payload with n"));
            Ok::<_, sluice::HandlerError>(())
        }
    })
    .await
    .expect("the subscriber starts")
}

/// `GET path` on `address` (host:port) over plain HTTP/1.1: the status code
/// and the body. Enough for the health check and the metrics page.
pub async fn http_get(address: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect to the server");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read the response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    // Chunked bodies keep their chunk sizes: callers look for lines in it.
    (status, body)
}

/// The value of the Prometheus sample whose name and labels start `series`
/// (`name{label="x"` …), if the page has one.
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

static SLUICE_BINARY: tokio::sync::OnceCell<std::path::PathBuf> = tokio::sync::OnceCell::const_new();

/// The workspace's target folder: `CARGO_TARGET_DIR` when set, else `target/`.
fn target_dir() -> std::path::PathBuf {
    let workspace = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    }
}

/// The `sluice` binary, built (or brought up to date) once per test binary:
/// it belongs to the `sluice-cli` package, which Cargo does not build for
/// this package's tests (`CARGO_BIN_EXE_*` covers only the same package's).
pub async fn sluice_binary() -> &'static std::path::PathBuf {
    SLUICE_BINARY
        .get_or_init(|| async {
            let target = target_dir();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let built = tokio::process::Command::new(cargo)
                .args(["build", "--quiet", "-p", "sluice-cli", "--bin", "sluice", "--manifest-path"])
                .arg(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
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

/// One refill of consumer `consumer` (its id) by `sluice.fetch_v2`, the
/// function the subscriber calls, claiming nothing: at most `chunk` events
/// of its window become tasks. Returns (materialized, more).
pub async fn refill<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    consumer: i32,
    chunk: i32,
) -> Result<(i32, bool), sqlx::Error> {
    sqlx::query_as(
        "SELECT materialized, more FROM sluice.fetch_v2($1, NULL, NULL, 0, $2, true, 0) WHERE materialized IS NOT NULL",
    )
    .bind(consumer)
    .bind(chunk)
    .fetch_one(executor)
    .await
}

/// A backlog written straight into the tables, as the measurement of
/// docs/BENCHMARKS.md builds its 10,000,000 (publishing and refilling that
/// many would take minutes): `events` events of subject `orders.eu.created`
/// in `stream`, and an available task of consumer `with_tasks` for each, its
/// position moved past them. The stream's other consumers have them all as
/// lag. Autovacuum is turned off on the tasks, so that the test decides
/// when the planner has statistics (`ANALYZE sluice.tasks`).
pub async fn backlog(pool: &PgPool, stream: &str, events: i64, with_tasks: &str) {
    sqlx::query("ALTER TABLE sluice.tasks SET (autovacuum_enabled = false)").execute(pool).await.unwrap();
    sqlx::query(
        "INSERT INTO sluice.events (stream_id, subject, payload)
         SELECT s.id, 'orders.eu.created', jsonb_build_object('n', g)
         FROM sluice.streams s, generate_series(1, $2) AS g WHERE s.name = $1",
    )
    .bind(stream)
    .bind(events)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH c AS (UPDATE sluice.consumers c SET position = pg_current_snapshot()
                    FROM sluice.streams s WHERE s.id = c.stream_id AND s.name = $1 AND c.name = $2
                    RETURNING c.id, c.stream_id)
         INSERT INTO sluice.tasks (consumer_id, event_id, event_txid, state, position, created_at)
         SELECT c.id, e.id, e.txid, 'available', e.id, e.created_at
         FROM c JOIN sluice.events e ON e.stream_id = c.stream_id",
    )
    .bind(stream)
    .bind(with_tasks)
    .execute(pool)
    .await
    .unwrap();
}

/// Injects a fault: a trigger `name` that raises "injected fault: `name`"
/// `BEFORE` `on` (e.g. `UPDATE ON sluice.tasks`) for each row, when `when`
/// holds (a trigger's WHEN condition), as the failure path of a write
/// happens. [`remove_fault`] takes it away.
pub async fn inject_fault(pool: &PgPool, name: &str, on: &str, when: Option<&str>) {
    let when = when.map(|w| format!("WHEN ({w})")).unwrap_or_default();
    sqlx::raw_sql(&format!(
        "CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'injected fault: {name}'; END $$;
         CREATE TRIGGER {name} BEFORE {on} FOR EACH ROW {when} EXECUTE FUNCTION public.{name}();"
    ))
    .execute(pool)
    .await
    .unwrap();
}

/// Removes the fault [`inject_fault`] put on `table`.
pub async fn remove_fault(pool: &PgPool, name: &str, table: &str) {
    sqlx::raw_sql(&format!("DROP TRIGGER {name} ON {table}")).execute(pool).await.unwrap();
}
