//! The `sluice` binary as a user runs it: exit codes, what it prints, and the
//! state it leaves in the database.
//!
//! The binary belongs to the `sluice-cli` package, so Cargo does not build it
//! for these tests (`CARGO_BIN_EXE_*` covers only the same package's
//! binaries); the first test to need it builds it once per test binary.

use std::process::Output;
use std::time::Duration;

use sqlx::{Connection as _, PgPool};
use support::{sluice_tables, TestDb, SLUICE_TABLES as TABLES};
use tokio::process::Command;

/// A `sluice` command with a clean environment: no `DATABASE_URL` or
/// `SLUICE_BASIC_AUTH` unless the test sets one, and no `RUST_LOG` to add
/// lines to stderr.
async fn sluice() -> Command {
    let mut cmd = Command::new(support::sluice_binary().await);
    cmd.env_remove("DATABASE_URL").env_remove("RUST_LOG").env_remove("SLUICE_BASIC_AUTH").kill_on_drop(true);
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
    // The one applied before it (numbers need not follow one another).
    let previous: i64 = sqlx::query_scalar("SELECT max(version) FROM sluice._migrations WHERE version < $1")
        .bind(latest)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    run_with_url(&db.url, &["migrate", "down"]).await.success("down");
    assert_eq!(newest().await, Some(previous), "plain down reverts one migration");
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

// ---------------------------------------------------------------------------
// Operating a queue: streams, consumers, publish, tasks, stats, workers,
// cleanup (issue 12). Every command's --json output is parsed; every bad
// input exits 1 with one line and leaves the stored data as it was.
// ---------------------------------------------------------------------------

/// Runs `sluice --database-url <url> <args>` with `input` on stdin.
async fn run_with_stdin(url: &str, args: &[&str], input: &str) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = sluice()
        .await
        .arg("--database-url")
        .arg(url)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write stdin");
    drop(stdin);
    Run::from(child.wait_with_output().await.expect("run sluice"))
}

impl Run {
    /// Asserts success and parses stdout as JSON.
    fn json(self, what: &str) -> serde_json::Value {
        let run = self.success(what);
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e}):\n{}", run.stdout))
    }
}

/// Every row of every table of schema `sluice`, as JSON text: compared
/// before and after a command that must change nothing.
async fn dump(pool: &PgPool) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'sluice' AND tablename NOT LIKE 'events\\_%'
         UNION SELECT 'events' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = String::new();
    for table in tables {
        let rows: Option<String> = sqlx::query_scalar(&format!(
            "SELECT jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text)::text FROM sluice.\"{table}\" t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push_str(&format!("{table}: {}\n", rows.unwrap_or_default()));
    }
    out
}

/// A handler's outcome by subject: `*.fail` fails for good, the rest succeed.
async fn fail_some(pool: &PgPool, stream: &str, consumer: &str) -> sluice::SubscriberHandle {
    sluice::sub(
        pool,
        sluice::Subscription::new(stream, consumer),
        |msg: sluice::Message<serde_json::Value>| async move {
            if msg.subject().ends_with(".fail") {
                Err(sluice::HandlerError::discard("the tax table is missing"))
            } else {
                Ok(())
            }
        },
    )
    .await
    .expect("subscribe")
}

#[tokio::test]
async fn streams_and_consumers_from_the_cli() {
    let db = TestDb::new().await;
    let url = &db.url;

    let s = run_with_url(url, &["--json", "stream", "create", "orders", "--retention", "2days"]).await.json("create");
    assert_eq!(s["name"], "orders");
    assert_eq!(s["event_retention_ms"], 2 * 86_400_000_u64);
    let again = run_with_url(url, &["stream", "create", "orders", "--retention", "2days"]).await.success("again");
    assert!(again.stdout.contains("orders"), "same settings: the stream as it is:\n{}", again.stdout);
    let conflict = run_with_url(url, &["stream", "create", "orders"]).await.failure("other retention");
    assert!(conflict.contains("already exists") && conflict.contains("event_retention"), "{conflict}");
    run_with_url(url, &["stream", "create", "audit"]).await.success("second stream");
    let list = run_with_url(url, &["--json", "stream", "list"]).await.json("list");
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["audit", "orders"]);
    let human = run_with_url(url, &["stream", "list"]).await.success("list as a table");
    assert!(human.stdout.starts_with(" STREAM") || human.stdout.contains("STREAM"), "a table:\n{}", human.stdout);

    let c = run_with_url(
        url,
        &[
            "--json",
            "consumer",
            "create",
            "orders",
            "billing",
            "--include",
            "orders.*.created",
            "--include",
            "orders.*.paid",
            "--exclude",
            "orders.test.>",
            "--start",
            "beginning",
            "--max-attempts",
            "3",
            "--lease",
            "45s",
            "--backoff",
            "2s,5m",
        ],
    )
    .await
    .json("consumer create");
    assert_eq!(c["include"], serde_json::json!(["orders.*.created", "orders.*.paid"]));
    assert_eq!(c["exclude"], serde_json::json!(["orders.test.>"]));
    assert_eq!(c["max_attempts"], 3);
    assert_eq!(c["lease"], "45s");
    assert_eq!(c["backoff_initial"], "2s");
    assert_eq!(c["backoff_max"], "5m");
    let stored = sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap();
    assert_eq!(stored.lease, Duration::from_secs(45), "stored as given");
    run_with_url(url, &["consumer", "create", "orders", "audit", "--start", "2026-01-01T00:00:00Z"])
        .await
        .success("at");
    let list = run_with_url(url, &["--json", "consumer", "list", "orders"]).await.json("consumer list");
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(run_with_url(url, &["--json", "consumer", "list"]).await.json("all").as_array().unwrap().len(), 2);

    let paused = run_with_url(url, &["--json", "consumer", "pause", "orders", "billing"]).await.json("pause");
    assert_eq!(paused["paused"], true);
    assert!(sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap().paused);
    let shown = run_with_url(url, &["--json", "consumer", "show", "orders", "billing"]).await.json("show");
    assert_eq!(shown["paused"], true);
    assert_eq!(shown["stats"]["lag_events"], 0);
    assert_eq!(shown["workers"], serde_json::json!([]));
    // The ordering by key: set on the paused, drained consumer and back;
    // on a running one refused in one line, nothing changed.
    let ordered = run_with_url(url, &["--json", "consumer", "set-order", "orders", "billing", "--ordered"])
        .await
        .json("set-order --ordered");
    assert_eq!(
        (ordered["ordered_by_key"].as_bool(), ordered["hold_key_on_dead_letter"].as_bool()),
        (Some(true), Some(false))
    );
    let held = run_with_url(
        url,
        &["--json", "consumer", "set-order", "orders", "billing", "--ordered", "--hold-key-on-dead-letter"],
    )
    .await
    .json("set-order --hold-key-on-dead-letter");
    assert_eq!(held["hold_key_on_dead_letter"], true);
    run_with_url(url, &["consumer", "set-order", "orders", "billing", "--unordered"]).await.success("--unordered");
    assert!(!sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap().ordered_by_key);
    let both = run_with_url(url, &["consumer", "set-order", "orders", "billing", "--ordered", "--unordered"]).await;
    assert!(both.failure("both").contains("--unordered"));
    let neither = run_with_url(url, &["consumer", "set-order", "orders", "billing"]).await;
    assert!(neither.failure("neither").contains("--unordered"));
    run_with_url(url, &["consumer", "resume", "orders", "billing"]).await.success("resume");
    let running = run_with_url(url, &["consumer", "set-order", "orders", "billing", "--ordered"]).await;
    assert!(running.failure("not paused").contains("it is not paused"));
    assert!(!sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap().ordered_by_key, "unchanged");
    let created = run_with_url(url, &["--json", "consumer", "create", "orders", "ledger", "--ordered"])
        .await
        .json("create --ordered");
    assert_eq!(created["ordered_by_key"], true);
    let hold_alone = run_with_url(url, &["consumer", "create", "orders", "x", "--hold-key-on-dead-letter"]).await;
    assert!(hold_alone.failure("hold without --ordered").contains("--ordered"));
    run_with_url(url, &["consumer", "delete", "orders", "ledger", "--yes"]).await.success("delete ledger");
    assert!(!sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap().paused);

    // Replay: published and completed, then reset to the beginning comes back as lag.
    sluice::publish(&db.pool, "orders", sluice::NewEvent::new("orders.eu.created", &1).unwrap()).await.unwrap();
    let handle = fail_some(&db.pool, "orders", "billing").await;
    support::wait_until(Duration::from_secs(20), "the event handled", || async {
        sluice::queue_stats(&db.pool, Some("orders"), Some("billing")).await.unwrap().consumers[0].lag_events == 0
            && support::task_states(&db.pool, "billing").await.is_empty()
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await;
    let refused = run_with_url(url, &["consumer", "reset", "orders", "billing", "--to", "beginning"]).await;
    assert!(refused.failure("reset without --yes").contains("--yes"));
    run_with_url(url, &["consumer", "reset", "orders", "billing", "--to", "beginning", "--yes"]).await.success("reset");
    let stats = run_with_url(url, &["--json", "stats", "orders", "billing"]).await.json("stats after reset");
    assert_eq!(stats["consumers"][0]["lag_events"], 1, "the event is to be replayed: {stats}");
    for to in ["now", "1", "2026-01-01T00:00:00Z"] {
        run_with_url(url, &["consumer", "reset", "orders", "billing", "--to", to, "--yes"]).await.success(to);
    }

    // Deletes ask first; without a terminal and without --yes nothing goes.
    let before = dump(&db.pool).await;
    let line = run_with_url(url, &["consumer", "delete", "orders", "audit"]).await.failure("delete without --yes");
    assert!(line.contains("--yes"), "{line}");
    let line = run_with_url(url, &["stream", "delete", "orders"]).await.failure("stream delete without --yes");
    assert!(line.contains("--yes"), "{line}");
    assert_eq!(dump(&db.pool).await, before, "nothing changed");
    run_with_url(url, &["consumer", "delete", "orders", "audit", "--yes"]).await.success("consumer delete");
    assert!(sluice::get_consumer(&db.pool, "orders", "audit").await.is_err());
    let shown = run_with_url(url, &["--json", "stream", "show", "orders"]).await.json("stream show");
    assert_eq!(shown["consumers"].as_array().unwrap().len(), 1);
    assert_eq!(shown["events"], 1);
    run_with_url(url, &["stream", "delete", "orders", "--yes"]).await.success("stream delete");
    assert!(sluice::get_stream(&db.pool, "orders").await.is_err());
}

#[tokio::test]
async fn publish_from_arguments_stdin_and_ndjson() {
    let db = TestDb::new().await;
    let url = &db.url;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();

    let one = run_with_url(
        url,
        &[
            "--json",
            "publish",
            "orders",
            "orders.eu.created",
            r#"{"id": 1}"#,
            "--priority",
            "4",
            "--key",
            "c-1",
            "--deliver-at",
            "2030-01-01T00:00:00Z",
            "--metadata",
            "source=cli",
            "--metadata",
            "run=1",
        ],
    )
    .await
    .json("publish one");
    assert!(one["event_id"].as_i64().unwrap() > 0);
    let stdin = run_with_stdin(url, &["publish", "orders", "orders.us.created"], r#"{"id": 2}"#).await;
    assert!(stdin.success("payload from stdin").stdout.contains("published event"));
    let stored: Vec<(String, serde_json::Value, i16, Option<String>, serde_json::Value, bool)> = sqlx::query_as(
        "SELECT subject, payload, priority, key, metadata, deliver_at IS NOT NULL FROM sluice.events ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        [
            (
                "orders.eu.created".to_string(),
                serde_json::json!({"id": 1}),
                4,
                Some("c-1".to_string()),
                serde_json::json!({"source": "cli", "run": "1"}),
                true
            ),
            ("orders.us.created".to_string(), serde_json::json!({"id": 2}), 1, None, serde_json::json!({}), false),
        ]
    );

    // 1,200 lines: three batches, a final count, no progress bar when piped.
    let mut ndjson = String::new();
    for n in 0..1200 {
        ndjson.push_str(&format!("{{\"subject\": \"orders.eu.created\", \"payload\": {{\"n\": {n}}}}}\n"));
    }
    let path = std::env::temp_dir().join(format!("sluice-{}.ndjson", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, &ndjson).unwrap();
    let file = run_with_url(url, &["--json", "publish", "orders", "--file", path.to_str().unwrap()]).await;
    assert_eq!(file.json("--file")["published"], 1200);
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sluice.events").fetch_one(&db.pool).await.unwrap()
    };
    assert_eq!(count().await, 1202);

    // A bad line in the second batch: the first batch stays, nothing of the second is written.
    let mut bad = ndjson.clone();
    let mut lines: Vec<&str> = ndjson.lines().collect();
    lines[700] = r#"{"subject": "orders..created", "payload": 1}"#;
    bad.clear();
    for l in &lines {
        bad.push_str(l);
        bad.push('\n');
    }
    let line = run_with_stdin(url, &["publish", "orders", "--file", "-"], &bad).await.failure("bad line");
    assert!(line.contains("line 701") && line.contains("invalid subject"), "names the line and the reason: {line}");
    assert_eq!(count().await, 1202 + 500, "the batch before the bad line was written, not the bad line's batch");

    // --skip-invalid: every bad line reported with its number, the rest written.
    let mixed = "{\"subject\": \"a.b\", \"payload\": 1}\nnot json\n{\"subject\": \"a.b\", \"payload\": 2, \"priority\": 9}\n\
                 {\"subject\": \"a.b\"}\n{\"subject\": \"a.b\", \"payload\": 3, \"colour\": \"red\"}\n{\"subject\": \"a.b\", \"payload\": 4}\n";
    let skipped = run_with_stdin(url, &["--json", "publish", "orders", "--file", "-", "--skip-invalid"], mixed).await;
    assert_eq!(skipped.code, Some(0), "{}", skipped.stderr);
    for n in [2, 3, 4, 5] {
        assert!(skipped.stderr.contains(&format!("line {n} ")), "line {n} reported:\n{}", skipped.stderr);
    }
    assert!(skipped.stderr.contains("invalid priority 9"), "{}", skipped.stderr);
    let summary: serde_json::Value = serde_json::from_str(&skipped.stdout).unwrap();
    assert_eq!((summary["published"].as_i64(), summary["skipped"].as_i64()), (Some(2), Some(4)));
    std::fs::remove_file(&path).ok();
}

#[tokio::test]
async fn tasks_are_listed_shown_and_steered_by_id_and_by_filter() {
    let db = TestDb::new().await;
    let url = &db.url;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    sluice::create_consumer(&db.pool, "orders", "billing", sluice::ConsumerOptions::default().max_attempts(1))
        .await
        .unwrap();
    let mut events = Vec::new();
    for n in 0..5 {
        events.push(sluice::NewEvent::new("orders.eu.fail", &serde_json::json!({"n": n})).unwrap());
    }
    for n in 5..8 {
        events.push(sluice::NewEvent::new("orders.us.fail", &serde_json::json!({"n": n})).unwrap());
    }
    let ids = sluice::publish_batch(&db.pool, "orders", events).await.unwrap();
    let handle = fail_some(&db.pool, "orders", "billing").await;
    support::wait_until(Duration::from_secs(20), "8 dead letters", || async {
        support::task_states(&db.pool, "billing").await == [("discarded".to_string(), 8)]
    })
    .await;
    handle.shutdown(Duration::from_secs(5)).await;
    sluice::pause_consumer(&db.pool, "orders", "billing").await.unwrap();

    // Paging by cursor.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["--json", "tasks", "list", "orders", "billing", "--state", "discarded", "--limit", "3"];
        if let Some(a) = &after {
            args.extend(["--after", a.as_str()]);
        }
        let page = run_with_url(url, &args).await.json("a page");
        for t in page["tasks"].as_array().unwrap() {
            assert_eq!(t["state"], "discarded");
            seen.push(t["event_id"].as_i64().unwrap());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().map(|id| id.0).collect::<Vec<_>>(), "every task once, in order");
    let eu = run_with_url(url, &["--json", "tasks", "list", "orders", "billing", "--subject", "orders.eu.*"]).await;
    assert_eq!(eu.json("by subject")["tasks"].as_array().unwrap().len(), 5);
    let old = run_with_url(url, &["--json", "tasks", "list", "orders", "billing", "--older-than", "1h"]).await;
    assert_eq!(old.json("older than an hour")["tasks"].as_array().unwrap().len(), 0);
    let six = run_with_url(url, &["--json", "tasks", "list", "orders", "billing", "--payload", r#"{"n": 6}"#]).await;
    let six: Vec<i64> =
        six.json("by payload")["tasks"].as_array().unwrap().iter().map(|t| t["event_id"].as_i64().unwrap()).collect();
    assert_eq!(six, [ids[6].0], "only the event whose payload has n = 6");

    let id = ids[0].0.to_string();
    let shown = run_with_url(url, &["--json", "tasks", "show", "orders", "billing", &id]).await.json("show");
    assert_eq!(shown["event"]["payload"], serde_json::json!({"n": 0}));
    assert_eq!(shown["event"]["subject"], "orders.eu.fail");
    assert_eq!(shown["task"]["errors"][0]["error"], "the tax table is missing");
    assert_eq!(shown["log"][0]["action"], "discarded");
    let human = run_with_url(url, &["tasks", "show", "orders", "billing", &id]).await.success("show as text");
    assert!(human.stdout.contains("the tax table is missing"), "{}", human.stdout);

    // A filter asks first: without --yes and a terminal, nothing changes.
    let before = dump(&db.pool).await;
    let line =
        run_with_url(url, &["tasks", "retry", "orders", "billing", "--state", "discarded"]).await.failure("no --yes");
    assert!(line.contains("8 task(s)") && line.contains("--yes"), "shows the count first: {line}");
    assert_eq!(dump(&db.pool).await, before);

    let retried = run_with_url(
        url,
        &["--json", "tasks", "retry", "orders", "billing", "--state", "discarded", "--subject", "orders.eu.>", "--yes"],
    )
    .await
    .json("retry by filter");
    assert_eq!(retried["retried"], 5);
    assert_eq!(
        support::task_states(&db.pool, "billing").await,
        [("available".to_string(), 5), ("discarded".to_string(), 3)]
    );

    // By id: one cancelled; a second cancel is refused and says why.
    run_with_url(url, &["tasks", "cancel", "orders", "billing", &id, "--reason", "duplicate"]).await.success("cancel");
    let line = run_with_url(url, &["tasks", "cancel", "orders", "billing", &id]).await.failure("cancel twice");
    assert!(line.contains("it is cancelled"), "{line}");
    let line = run_with_url(url, &["tasks", "cancel", "orders", "billing", "999999"]).await.failure("no such task");
    assert!(line.contains("no task for event 999999"), "{line}");
    let log = sluice::task_log(&db.pool, "orders", "billing", ids[0]).await.unwrap();
    assert_eq!(log.last().unwrap().reason.as_deref(), Some("duplicate"));

    let discarded =
        run_with_url(url, &["--json", "tasks", "discard", "orders", "billing", "--state", "available", "--yes"])
            .await
            .json("discard by filter");
    assert_eq!(discarded["discarded"], 4);
    let line = run_with_url(url, &["tasks", "retry", "orders", "billing", "--state", "running", "--yes"])
        .await
        .failure("state");
    assert!(line.contains("cannot retry running tasks"), "{line}");
    let line = run_with_url(url, &["tasks", "retry", "orders", "billing"]).await.failure("neither ids nor filter");
    assert!(line.contains("--state") || line.contains("EVENT_ID"), "{line}");
    assert_eq!(
        support::task_states(&db.pool, "billing").await,
        [("cancelled".to_string(), 1), ("discarded".to_string(), 7)]
    );
}

#[tokio::test]
async fn stats_workers_and_cleanup_show_the_queue_and_who_holds_vacuum_back() {
    let db = TestDb::new().await;
    let url = &db.url;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    sluice::create_consumer(&db.pool, "orders", "billing", sluice::ConsumerOptions::default().max_attempts(1))
        .await
        .unwrap();
    for subject in ["orders.eu.ok", "orders.eu.ok", "orders.eu.fail"] {
        sluice::publish(&db.pool, "orders", sluice::NewEvent::new(subject, &1).unwrap()).await.unwrap();
    }
    let lagging = run_with_url(url, &["--json", "stats"]).await.json("stats before any subscriber");
    assert_eq!(lagging["consumers"][0]["lag_events"], 3);
    assert!(lagging["consumers"][0]["lag_oldest_at"].is_string());

    // A session that holds a snapshot open: the stats name it.
    let mut holder =
        sqlx::PgConnection::connect_with(&db.options().await.application_name("stuck-report")).await.unwrap();
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT count(*) FROM sluice.events").execute(&mut holder).await.unwrap();
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut holder).await.unwrap();

    let handle = fail_some(&db.pool, "orders", "billing").await;
    support::wait_until(Duration::from_secs(20), "handled and reported", || async {
        let s = sluice::queue_stats(&db.pool, None, None).await.unwrap();
        let c = &s.consumers[0];
        c.lag_events == 0 && c.discarded == 1 && c.completed_last_minute == 2 && c.failed_last_minute == 1
    })
    .await;
    let stats = run_with_url(url, &["--json", "stats", "orders"]).await.json("stats");
    let c = &stats["consumers"][0];
    assert_eq!((c["discarded"].as_i64(), c["available"].as_i64()), (Some(1), Some(0)));
    assert_eq!(c["workers_active"].as_i64().unwrap() + c["workers_idle"].as_i64().unwrap(), 1);
    // Only this database's sessions hold its horizon: ours is the oldest.
    let h = &stats["database"]["xmin_holder"];
    assert_eq!(h["pid"].as_i64(), Some(holder_pid.into()), "the session is named: {stats}");
    assert_eq!(h["application"], "stuck-report");
    assert_eq!(h["state"], "idle in transaction");
    assert!(h["age_seconds"].as_f64().unwrap() > 0.0);
    assert!(stats["database"]["dead_rows"].is_array());
    let human = run_with_url(url, &["stats"]).await.success("stats as text");
    assert!(human.stdout.contains("xmin horizon") && human.stdout.contains("billing"), "{}", human.stdout);
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    let workers = run_with_url(url, &["--json", "workers", "list", "orders", "billing"]).await.json("workers");
    assert_eq!(workers["gateway_clients"], serde_json::json!([]), "no gateway client here");
    let w = &workers["workers"][0];
    assert_eq!(w["pid"].as_i64(), Some(std::process::id().into()), "this process");
    assert!(["active", "idle"].contains(&w["status"].as_str().unwrap()), "{w}");
    assert!(w["heartbeat_age_ms"].as_i64().unwrap() >= 0);

    // --watch redraws until stopped.
    let mut watch = sluice()
        .await
        .args(["--database-url", url, "stats", "--watch", "0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    watch.start_kill().unwrap();
    let out = watch.wait_with_output().await.unwrap();
    let frames = String::from_utf8_lossy(&out.stdout).matches("Ctrl-C to stop").count();
    assert!(frames >= 2, "redrawn: {frames} frames");

    handle.shutdown(Duration::from_secs(5)).await;
    let gone = run_with_url(url, &["--json", "workers", "list"]).await.json("after shutdown");
    assert_eq!(gone["workers"], serde_json::json!([]), "a stopped worker leaves");

    // Cleanup: the dry run changes nothing; the run removes the dead letter past its retention.
    sqlx::query("UPDATE sluice.consumers SET dead_retention = '1 millisecond'").execute(&db.pool).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let before = dump(&db.pool).await;
    let dry = run_with_url(url, &["--json", "cleanup", "--dry-run"]).await.json("dry run");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["consumers"][0]["expired_tasks"], 1);
    assert_eq!(dump(&db.pool).await, before, "a dry run changes nothing");
    let done = run_with_url(url, &["--json", "cleanup"]).await.json("cleanup");
    assert_eq!(done["consumers"][0]["expired_tasks"], 1);
    assert!(support::task_states(&db.pool, "billing").await.is_empty(), "the dead letter is gone");
}

#[tokio::test]
async fn bad_input_exits_1_with_one_line_and_changes_nothing() {
    let db = TestDb::new().await;
    let url = &db.url;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    sluice::create_consumer(&db.pool, "orders", "billing", sluice::ConsumerOptions::default()).await.unwrap();
    sluice::publish(&db.pool, "orders", sluice::NewEvent::new("orders.eu.created", &1).unwrap()).await.unwrap();
    let before = dump(&db.pool).await;

    let cases: &[(&[&str], &str)] = &[
        (&["publish", "nosuch", "a.b", "{}"], "stream \"nosuch\" does not exist"),
        (&["publish", "orders", "a.b", "{not json"], "invalid JSON"),
        (&["publish", "orders", "a.b", "{}", "--priority", "0"], "invalid priority 0"),
        (&["publish", "orders", "a.b", "{}", "--priority", "9"], "invalid priority 9"),
        (&["publish", "orders", "a.>.b", "{}"], "invalid subject \"a.>.b\""),
        (&["publish", "orders", "a.b", "{}", "--deliver-at", "tomorrow"], "invalid deliver_at \"tomorrow\""),
        (&["publish", "orders", "a.b", "{}", "--metadata", "novalue"], "invalid --metadata"),
        (&["stream", "create", "fresh", "--retention", "forever"], "invalid --retention \"forever\""),
        (&["stream", "create", "bad name!"], "invalid stream name"),
        (&["stream", "show", "nosuch"], "stream \"nosuch\" does not exist"),
        (&["stream", "delete", "nosuch", "--yes"], "stream \"nosuch\" does not exist"),
        (&["consumer", "create", "orders", "c2", "--include", "a.>.b"], "invalid subject pattern \"a.>.b\""),
        (&["consumer", "create", "orders", "c2", "--lease", "soon"], "invalid --lease \"soon\""),
        (&["consumer", "create", "orders", "c2", "--backoff", "1s"], "invalid --backoff"),
        (&["consumer", "create", "orders", "c2", "--start", "yesterday"], "invalid --start"),
        (&["consumer", "create", "nosuch", "c2"], "stream \"nosuch\" does not exist"),
        (&["consumer", "show", "orders", "nosuch"], "consumer \"nosuch\" of stream \"orders\" does not exist"),
        (&["consumer", "pause", "orders", "nosuch"], "consumer \"nosuch\""),
        (&["consumer", "reset", "orders", "billing", "--to", "last tuesday", "--yes"], "invalid --to"),
        (&["consumer", "delete", "orders", "nosuch", "--yes"], "consumer \"nosuch\""),
        (&["tasks", "list", "orders", "nosuch"], "consumer \"nosuch\""),
        (&["tasks", "list", "orders", "billing", "--subject", "a.>.b"], "invalid subject pattern"),
        (&["tasks", "list", "orders", "billing", "--older-than", "old"], "invalid --older-than \"old\""),
        (&["tasks", "list", "orders", "billing", "--after", "page2"], "not a cursor"),
        (&["tasks", "list", "orders", "billing", "--payload", "{n: 6}"], "invalid --payload \"{n: 6}\": not JSON"),
        (&["tasks", "list", "orders", "billing", "--metadata", r#"{"n": 6}"#], "metadata_contains"),
        (&["tasks", "list", "orders", "billing", "--limit", "0"], "invalid limit"),
        (&["tasks", "retry", "orders", "billing", "--state", "discarded", "--subject", "a.>.b", "--yes"], "pattern"),
        (&["tasks", "show", "orders", "billing", "42"], "has no task for event 42"),
        (&["stats", "nosuch"], "stream \"nosuch\" does not exist"),
        (&["stats", "orders", "nosuch"], "consumer \"nosuch\""),
        (&["workers", "list", "nosuch"], "stream \"nosuch\" does not exist"),
        // Usage errors: one line too.
        (&["stream", "frobnicate"], "unrecognized subcommand"),
        (&["publish"], "required"),
        (&["tasks", "list", "orders", "billing", "--state", "sleeping"], "invalid value 'sleeping'"),
        (&["publish", "orders", "a.b", "{}", "--priority", "high"], "invalid value 'high'"),
    ];
    for (args, expect) in cases {
        let line = run_with_url(url, args).await.failure(&format!("{args:?}"));
        assert!(line.contains(expect), "{args:?}: the line says {expect:?}: {line}");
    }
    // NDJSON with a bad line: the line number and the reason.
    let line =
        run_with_stdin(url, &["publish", "orders", "--file", "-"], "{\"subject\": \"a.b\", \"payload\": 1}\n{oops\n")
            .await
            .failure("bad NDJSON");
    assert!(line.contains("line 2 of stdin"), "{line}");
    // Unreachable and malformed database URLs, for a command other than migrate.
    let line = run_with_url("postgres://postgres@127.0.0.1:1/x", &["stats"]).await.failure("refused");
    assert!(line.contains("cannot connect"), "{line}");
    let line = run_with_url("nonsense", &["stream", "list"]).await.failure("malformed");
    assert!(line.contains("invalid database URL"), "{line}");

    assert_eq!(dump(&db.pool).await, before, "nothing stored changed");
}

#[tokio::test]
async fn serve_exposes_the_queue_to_prometheus_and_a_health_check() {
    use tokio::io::AsyncBufReadExt;
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    sluice::create_consumer(&db.pool, "orders", "billing", sluice::ConsumerOptions::default()).await.unwrap();

    // Port 0: the server says where it listens on its first line.
    let mut server = sluice()
        .await
        .args(["--database-url", &db.url, "serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let address = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("an address in {first:?}"))
        .to_string();

    assert_eq!(support::http_get(&address, "/healthz").await, (200, "ok\n".to_string()));
    let lag = r#"sluice_consumer_lag_events{stream="orders",consumer="billing"}"#;
    let (status, page) = support::http_get(&address, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(support::sample(&page, lag), Some(0.0), "{page}");
    sluice::publish(&db.pool, "orders", sluice::NewEvent::new("orders.eu.created", &1).unwrap()).await.unwrap();
    let page = support::http_get(&address, "/metrics").await.1;
    assert_eq!(support::sample(&page, lag), Some(1.0), "read at each scrape:\n{page}");
    assert!(support::sample(&page, "sluice_xmin_horizon_age_seconds").is_some(), "{page}");
    assert_eq!(support::http_get(&address, "/nothing").await.0, 404);
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    // A port that cannot be had: one line, exit 1.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let line = run_with_url(&db.url, &["serve", "--listen", &busy]).await.failure("port in use");
    assert!(line.contains("cannot listen on"), "{line}");
    let line = run_with_url(&db.url, &["serve", "--listen", "localhost"]).await.failure("not an address");
    assert!(line.contains("invalid value 'localhost'"), "{line}");
}

/// The row of `consumer` in `sluice stats`'s table, split into its cells.
fn stats_row(stdout: &str, consumer: &str) -> Vec<String> {
    let line = stdout.lines().find(|l| l.split_whitespace().nth(1) == Some(consumer));
    line.unwrap_or_else(|| panic!("a row for {consumer} in:\n{stdout}")).split_whitespace().map(String::from).collect()
}

#[tokio::test]
async fn stats_count_up_to_a_cap_and_say_what_is_estimated_past_it() {
    // Counting every task of a backlog of millions at each scrape is what
    // the cap avoids (docs/BENCHMARKS.md measures it on 10,000,000); 12,000
    // tasks are enough to cross it. Below it, counts are exact.
    const CAP: i64 = 10_000;
    let db = TestDb::new().await;
    let url = &db.url;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    for consumer in ["billing", "ledger"] {
        sluice::create_consumer(&db.pool, "orders", consumer, sluice::ConsumerOptions::default()).await.unwrap();
    }
    support::backlog(&db.pool, "orders", 12_000, "ledger").await;
    sqlx::query(
        "UPDATE sluice.tasks t SET state = 'discarded', attempt = 1, finished_at = now()
         FROM sluice.consumers c WHERE c.id = t.consumer_id AND c.name = 'ledger' AND t.event_id % 4000 = 1",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    // No statistics yet: counted up to the cap, said to be at least that.
    let stats = run_with_url(url, &["--json", "stats", "orders"]).await.json("stats");
    assert_eq!(stats["count_cap"], CAP, "{stats}");
    let (billing, ledger) = (&stats["consumers"][0], &stats["consumers"][1]);
    assert_eq!((ledger["consumer"].as_str(), ledger["available"].as_i64()), (Some("ledger"), Some(CAP)), "{stats}");
    assert_eq!(ledger["inexact"]["available"], "at_least", "{stats}");
    assert_eq!(ledger["discarded"], 3, "below the cap, exact: {stats}");
    for exact in ["discarded", "running", "scheduled", "waiting", "completed", "cancelled", "lag_events"] {
        assert!(ledger["inexact"].get(exact).is_none(), "{exact} is exact: {stats}");
    }
    assert!(ledger["events"].as_i64().unwrap() >= CAP && ledger["inexact"].get("events").is_some(), "{stats}");
    assert!(
        billing["lag_events"].as_i64().unwrap() >= CAP && billing["inexact"].get("lag_events").is_some(),
        "{stats}"
    );
    assert_eq!(billing["available"], 0);
    assert!(billing["inexact"].get("available").is_none(), "{stats}");

    let text = run_with_url(url, &["stats"]).await.success("stats").stdout;
    let row = stats_row(&text, "ledger");
    // STREAM CONSUMER EVENTS LAG LAG-AGE SCHED WAIT AVAIL RUN DEAD …
    assert_eq!((row[7].as_str(), row[9].as_str()), ("≥10000", "3"), "{text}");
    assert!(text.contains("≥ counted up to 10000 and stopped"), "the mark is explained:\n{text}");

    // With statistics, the planner's estimate, marked as one.
    sqlx::query("ANALYZE sluice.tasks").execute(&db.pool).await.unwrap();
    let stats = run_with_url(url, &["--json", "stats", "orders", "ledger"]).await.json("stats");
    let ledger = &stats["consumers"][0];
    assert_eq!(ledger["inexact"]["available"], "estimated", "{stats}");
    let estimate = ledger["available"].as_i64().unwrap();
    assert!((11_000..=13_000).contains(&estimate), "about the 11,997 available: {stats}");
    assert_eq!(ledger["discarded"], 3, "{stats}");
    let text = run_with_url(url, &["stats", "orders", "ledger"]).await.success("stats").stdout;
    assert_eq!(stats_row(&text, "ledger")[7], format!("≈{estimate}"), "{text}");
    assert!(text.contains("≈ counted up to 10000 and stopped: estimated"), "{text}");

    // The same figures on /metrics, each with whether it is exact.
    let (mut server, address) = start_serve(url, &[], &[]).await;
    let page = support::http_get(&address, "/metrics").await.1;
    let series = |name: &str, consumer: &str, state: &str| {
        support::sample(&page, &format!(r#"{name}{{stream="orders",consumer="{consumer}",state="{state}"}}"#))
    };
    assert_eq!(series("sluice_tasks", "ledger", "available"), Some(estimate as f64), "{page}");
    assert_eq!(series("sluice_tasks_exact", "ledger", "available"), Some(0.0), "{page}");
    assert_eq!(series("sluice_tasks", "ledger", "discarded"), Some(3.0), "{page}");
    assert_eq!(series("sluice_tasks_exact", "ledger", "discarded"), Some(1.0), "{page}");
    assert_eq!(support::sample(&page, "sluice_stats_count_cap"), Some(CAP as f64), "{page}");
    let lag = |name: &str, consumer: &str| {
        support::sample(&page, &format!(r#"{name}{{stream="orders",consumer="{consumer}"}}"#))
    };
    assert_eq!(lag("sluice_consumer_lag_events_exact", "billing"), Some(0.0), "{page}");
    assert_eq!(
        (lag("sluice_consumer_lag_events", "ledger"), lag("sluice_consumer_lag_events_exact", "ledger")),
        (Some(0.0), Some(1.0))
    );
    assert_eq!(support::sample(&page, r#"sluice_stream_events_exact{stream="orders"}"#), Some(0.0), "{page}");
    server.start_kill().unwrap();
    server.wait().await.unwrap();
}

#[tokio::test]
async fn the_lag_of_a_consumer_part_way_through_a_window_is_what_is_left_of_it() {
    // A consumer catching up works through a window of events in chunks
    // (fetch_v2): the ones it has done are not lag, however many there are
    // (more than the count's cap here), and do not use up the count.
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    for consumer in ["billing", "ledger"] {
        sluice::create_consumer(&db.pool, "orders", consumer, sluice::ConsumerOptions::default()).await.unwrap();
    }
    support::backlog(&db.pool, "orders", 12_000, "ledger").await;
    // Billing is part way through its window: 11,000 of the 12,000 done.
    sqlx::query(
        "UPDATE sluice.consumers c SET window_end = pg_current_snapshot(), window_txid = e.txid, window_id = e.id
         FROM (SELECT txid, id FROM sluice.events ORDER BY txid, id OFFSET 10999 LIMIT 1) e
         WHERE c.name = 'billing'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let stats = run_with_url(&db.url, &["--json", "stats", "orders", "billing"]).await.json("stats");
    let billing = &stats["consumers"][0];
    assert_eq!(billing["lag_events"], 1000, "{stats}");
    assert!(billing["inexact"].get("lag_events").is_none(), "counted, exactly: {stats}");
}

/// Starts `sluice serve` on a free port with `args` after `serve` and `env`
/// set; returns the process and the address it says it listens on.
async fn start_serve(url: &str, args: &[&str], env: &[(&str, &str)]) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = sluice().await;
    cmd.args(["--database-url", url, "serve", "--listen", "127.0.0.1:0"]).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut server = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let address = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("an address in {first:?}"))
        .to_string();
    (server, address)
}

/// One HTTP/1.1 request with extra header lines: the status and the body.
async fn http(address: &str, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let response = http_response(address, method, path, headers).await;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// The dashboard's CSRF cookie as a `Cookie:` header, from a page's `Set-Cookie`.
async fn dashboard_cookie(address: &str, headers: &[&str]) -> String {
    let response = http_response(address, "GET", "/", headers).await;
    let set = response
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .unwrap_or_else(|| panic!("the page sets a cookie: {response}"));
    format!("Cookie: {}", set.split(';').next().unwrap())
}

/// One HTTP/1.1 request, the whole response as text.
async fn http_response(address: &str, method: &str, path: &str, headers: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect to the server");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: 0\r\n");
    for h in headers {
        request.push_str(&format!("{h}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn serve_mounts_the_dashboard_behind_basic_auth_and_read_only() {
    let db = TestDb::new().await;
    sluice::create_stream(&db.pool, "orders", sluice::StreamOptions::default()).await.unwrap();
    sluice::create_consumer(&db.pool, "orders", "billing", sluice::ConsumerOptions::default()).await.unwrap();
    // "admin:s3cret" in base64, and a wrong password.
    let admin = "Authorization: Basic YWRtaW46czNjcmV0";
    let wrong = "Authorization: Basic YWRtaW46d3Jvbmc=";
    let pause = "/streams/orders/consumers/billing/pause";
    let paused = || async { sluice::get_consumer(&db.pool, "orders", "billing").await.unwrap().paused };

    // Credentials from the environment, read-only.
    let (mut server, address) = start_serve(&db.url, &["--read-only"], &[("SLUICE_BASIC_AUTH", "admin:s3cret")]).await;
    assert_eq!(http(&address, "GET", "/healthz", &[]).await.0, 200, "probes need no password");
    assert_eq!(http(&address, "GET", "/metrics", &[]).await.0, 200, "nor does Prometheus");
    assert_eq!(http(&address, "GET", "/", &[]).await.0, 401);
    assert_eq!(http(&address, "GET", "/", &[wrong]).await.0, 401);
    let (status, page) = http(&address, "GET", "/", &[admin]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Overview") && page.contains("read-only"), "{page}");
    let (status, page) = http(&address, "GET", "/streams/orders/consumers/billing", &[admin]).await;
    assert_eq!(status, 200, "{page}");
    assert!(!page.contains(r#"method="post""#), "no action offered: {page}");
    let status = http(&address, "POST", pause, &[admin, "HX-Request: true"]).await.0;
    assert!(status == 404 || status == 405, "no action route: {status}");
    assert!(!paused().await);
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    // Credentials from the flag, actions mounted.
    let (mut server, address) = start_serve(&db.url, &["--basic-auth", "admin:s3cret"], &[]).await;
    let cookie = dashboard_cookie(&address, &[admin]).await;
    let cookie = cookie.as_str();
    assert_eq!(http(&address, "POST", pause, &["HX-Request: true", cookie]).await.0, 401, "no password, no pause");
    assert!(!paused().await);
    assert_eq!(http(&address, "POST", pause, &[admin, cookie]).await.0, 403, "no htmx header, no token, no pause");
    assert_eq!(http(&address, "POST", pause, &[admin, "HX-Request: true"]).await.0, 403, "no cookie, no pause");
    assert!(!paused().await);
    assert_eq!(http(&address, "POST", pause, &[admin, "HX-Request: true", cookie]).await.0, 303);
    assert!(paused().await);
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    // No auth asked for: the dashboard is open.
    let (mut server, address) = start_serve(&db.url, &[], &[]).await;
    assert_eq!(http(&address, "GET", "/workers", &[]).await.0, 200);
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let line = run_with_url(&db.url, &["serve", "--basic-auth", "admin"]).await.failure("not USER:PASS");
    assert!(line.contains("USER:PASS"), "{line}");
}

/// `sluice gateway key add|list|revoke`, its bad inputs (one line, exit 1,
/// nothing changed), and `sluice serve` answering the gateway's WebSocket
/// at /gateway unless told not to.
#[tokio::test]
async fn gateway_keys_are_managed_from_the_cli_and_serve_mounts_the_gateway() {
    let db = TestDb::new().await;
    let url = &db.url;
    // A valid Ed25519 public key (of the secret key of 32 bytes 0x01), and another.
    let key = "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w=";
    let other = "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q=";
    let added = run_with_url(
        url,
        &[
            "--json",
            "gateway",
            "key",
            "add",
            "billing-py",
            "--public-key",
            key,
            "--publish",
            "orders",
            "--consume",
            "orders/billing",
        ],
    )
    .await
    .json("key add");
    assert_eq!(added["name"], "billing-py");
    assert_eq!(added["public_key"], key);
    assert_eq!(
        (added["publish"].clone(), added["consume"].clone()),
        (serde_json::json!(["orders"]), serde_json::json!(["orders/billing"]))
    );
    let list = run_with_url(url, &["gateway", "key", "list"]).await.success("key list");
    assert!(list.stdout.contains("billing-py") && list.stdout.contains("orders/billing"), "{}", list.stdout);

    let before = dump(&db.pool).await;
    let cases: [(&[&str], &str); 7] = [
        (&["gateway", "key", "add", "billing-py", "--public-key", other], "gateway key \"billing-py\" exists already"),
        (&["gateway", "key", "add", "copy", "--public-key", key], "registered already, as gateway key \"billing-py\""),
        (&["gateway", "key", "add", "bad", "--public-key", "AAAA"], "invalid public key"),
        (&["gateway", "key", "add", "bad", "--public-key", other, "--consume", "orders"], "not STREAM/CONSUMER"),
        (&["gateway", "key", "add", "bad name", "--public-key", other], "invalid name"),
        (&["gateway", "key", "revoke", "nobody", "--yes"], "gateway key \"nobody\" does not exist"),
        (&["gateway", "key", "revoke", "billing-py"], "pass --yes"),
    ];
    for (args, expect) in cases {
        let line = run_with_url(url, args).await.failure(&format!("{args:?}"));
        assert!(line.contains(expect), "{args:?}: the line says {expect:?}: {line}");
    }
    assert_eq!(dump(&db.pool).await, before, "nothing changed");

    // serve: the gateway's challenge at /gateway; --no-gateway leaves it out.
    let (mut server, address) = start_serve(url, &[], &[]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/gateway")).await.expect("a gateway");
    let challenge = futures::StreamExt::next(&mut socket).await.unwrap().unwrap().into_text().unwrap();
    assert!(challenge.contains(r#""type":"challenge""#), "{challenge}");
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let (mut server, address) = start_serve(url, &["--no-gateway"], &[]).await;
    assert!(tokio_tungstenite::connect_async(format!("ws://{address}/gateway")).await.is_err(), "no gateway");
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    // The gateway's limits from serve's flags: a hello over the frame limit,
    // and no hello within the auth timeout, are refused as documented.
    let flags = ["--gateway-max-frame-bytes", "2048", "--gateway-auth-timeout", "1s"];
    let (mut server, address) = start_serve(url, &flags, &[]).await;
    let refused = |text: String, code: &str| {
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!((frame["type"].as_str(), frame["code"].as_str()), (Some("error"), Some(code)), "{frame}");
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/gateway")).await.unwrap();
    futures::StreamExt::next(&mut socket).await.unwrap().unwrap();
    let big = serde_json::json!({"type": "hello", "public_key": "x", "signature": "y".repeat(3000)});
    futures::SinkExt::send(&mut socket, tokio_tungstenite::tungstenite::Message::text(big.to_string())).await.unwrap();
    let answer = futures::StreamExt::next(&mut socket).await.unwrap().unwrap().into_text().unwrap();
    refused(answer.to_string(), "frame_too_large");
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/gateway")).await.unwrap();
    futures::StreamExt::next(&mut socket).await.unwrap().unwrap();
    let waited = std::time::Instant::now();
    let answer = futures::StreamExt::next(&mut socket).await.unwrap().unwrap().into_text().unwrap();
    refused(answer.to_string(), "auth_timeout");
    assert!(waited.elapsed() < Duration::from_secs(8), "--gateway-auth-timeout 1s, not the default 10s");
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    // --gateway-max-unauthenticated: past it, an upgrade is refused (HTTP 503).
    let (mut server, address) = start_serve(url, &["--gateway-max-unauthenticated", "1"], &[]).await;
    let (mut waiting, _) = tokio_tungstenite::connect_async(format!("ws://{address}/gateway")).await.unwrap();
    futures::StreamExt::next(&mut waiting).await.unwrap().unwrap();
    match tokio_tungstenite::connect_async(format!("ws://{address}/gateway")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected HTTP 503 past --gateway-max-unauthenticated 1, got {:?}", other.map(|(_, r)| r)),
    }
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    for (flag, value, expect) in [
        ("--gateway-max-unauthenticated", "0", "--gateway-max-unauthenticated"),
        ("--gateway-max-credit", "0", "--gateway-max-credit"),
        ("--gateway-max-frame-bytes", "10", "--gateway-max-frame-bytes"),
        ("--gateway-settle-timeout", "0s", "at least 1s"),
        ("--gateway-auth-timeout", "soon", "--gateway-auth-timeout"),
        ("--pool-size", "1", "--pool-size"),
    ] {
        let line = run_with_url(url, &["serve", "--listen", "127.0.0.1:0", flag, value]).await.failure(flag);
        assert!(line.contains(expect), "{flag} {value}: {line}");
    }

    let revoked =
        run_with_url(url, &["--json", "gateway", "key", "revoke", "billing-py", "--yes"]).await.json("revoke");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let again = run_with_url(url, &["gateway", "key", "revoke", "billing-py", "--yes"]).await.failure("twice");
    assert!(again.contains("revoked already"), "{again}");
}
