//! Sluice's schema and its migration runner, against a real Postgres.
//!
//! Up creates exactly the expected objects, down removes every one of them,
//! the runner lives beside an application's own sqlx migrations in either
//! order, two runners racing apply the schema once, and the CHECK constraints
//! keep bad rows out even when they are written by hand.

use std::path::{Path, PathBuf};

use sqlx::PgPool;
use support::{sluice_tables as tables, TestDb, SLUICE_TABLES as TABLES};

const TYPES: [&str; 3] = ["task_action", "task_state", "worker_status"];
const FUNCTIONS: [&str; 13] = [
    "ack_v1",
    "copy_table_access",
    "delete_consumer_tasks",
    "estimated_events",
    "estimated_tasks",
    "fetch_v2",
    "maintain_event_partitions",
    "note_freed_key",
    "patterns_regex",
    "task_event_txid",
    "valid_name",
    "valid_patterns",
    "valid_subject",
];
const SEQUENCES: [&str; 1] = ["lease_token"];

/// Names of one kind of object in schema `sluice`, sorted.
async fn names(pool: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(pool).await.expect("catalog query")
}

async fn types(pool: &PgPool) -> Vec<String> {
    // Only the types created on their own: tables' row types and arrays are left out.
    names(
        pool,
        "SELECT t.typname::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = 'sluice' AND t.typtype = 'e' ORDER BY 1",
    )
    .await
}

async fn functions(pool: &PgPool) -> Vec<String> {
    names(
        pool,
        "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'sluice' ORDER BY 1",
    )
    .await
}

async fn sequences(pool: &PgPool) -> Vec<String> {
    // Identity columns own sequences too; only the free-standing ones count here.
    names(
        pool,
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'sluice' AND c.relkind = 'S'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d
                           WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i')
         ORDER BY 1",
    )
    .await
}

/// Asserts that the whole schema is in place: tables, types, functions, sequence.
async fn assert_schema_present(pool: &PgPool) {
    assert_eq!(tables(pool).await, TABLES, "tables in schema sluice");
    assert_eq!(types(pool).await, TYPES, "enum types in schema sluice");
    assert_eq!(functions(pool).await, FUNCTIONS, "functions in schema sluice");
    assert_eq!(sequences(pool).await, SEQUENCES, "sequences in schema sluice");
}

/// Asserts that nothing of Sluice's is left in the database.
async fn assert_schema_gone(pool: &PgPool) {
    let schema: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'sluice')")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(!schema, "schema sluice still exists");
    assert_eq!(tables(pool).await, Vec::<String>::new());
    assert_eq!(types(pool).await, Vec::<String>::new());
    assert_eq!(functions(pool).await, Vec::<String>::new());
    assert_eq!(sequences(pool).await, Vec::<String>::new());
}

/// Every user-visible object of the database (schemas, relations, types,
/// functions) outside the system schemas, to compare a database before and
/// after a round trip.
async fn user_objects(pool: &PgPool) -> Vec<String> {
    names(
        pool,
        "WITH user_ns AS (
             SELECT oid, nspname FROM pg_namespace
             WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
               AND nspname NOT LIKE 'pg_temp_%' AND nspname NOT LIKE 'pg_toast_temp_%'
         )
         SELECT 'schema ' || nspname FROM user_ns
         UNION ALL
         SELECT 'relation ' || n.nspname || '.' || c.relname
         FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace
         UNION ALL
         SELECT 'type ' || n.nspname || '.' || t.typname
         FROM pg_type t JOIN user_ns n ON n.oid = t.typnamespace
         UNION ALL
         SELECT 'function ' || n.nspname || '.' || p.proname
         FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace
         ORDER BY 1",
    )
    .await
}

/// Versions of every migration this build knows.
async fn known_versions(pool: &PgPool) -> Vec<i64> {
    sluice::migration_status(pool).await.expect("status").iter().map(|s| s.version).collect()
}

#[tokio::test]
async fn up_creates_every_object_and_a_second_up_applies_nothing() {
    let db = TestDb::empty().await;

    let applied = sluice::migrate(&db.pool).await.expect("first migrate");
    assert!(applied.contains(&1), "migration 1 applied, got {applied:?}");
    assert_eq!(applied, known_versions(&db.pool).await, "every known migration applied, in order");
    assert_schema_present(&db.pool).await;

    let again = sluice::migrate(&db.pool).await.expect("second migrate");
    assert_eq!(again, Vec::<i64>::new(), "nothing left to apply");
    assert_schema_present(&db.pool).await;

    let history: Vec<i64> = sqlx::query_scalar("SELECT version FROM sluice._migrations ORDER BY version")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(history, applied, "one history row per migration");
}

#[tokio::test]
async fn down_all_leaves_the_database_as_it_was() {
    let db = TestDb::empty().await;
    let before = user_objects(&db.pool).await;

    let applied = sluice::migrate(&db.pool).await.expect("migrate");
    let reverted = sluice::migrate_down(&db.pool, sluice::Steps::All).await.expect("down all");
    let newest_first: Vec<i64> = applied.iter().rev().copied().collect();
    assert_eq!(reverted, newest_first, "every migration reverted, newest first");

    assert_schema_gone(&db.pool).await;
    assert_eq!(user_objects(&db.pool).await, before, "objects left behind by up + down all");

    // Down on a database without Sluice is a no-op, not an error.
    let nothing = sluice::migrate_down(&db.pool, sluice::Steps::All).await.expect("down all again");
    assert_eq!(nothing, Vec::<i64>::new());
    let nothing = sluice::migrate_down(&db.pool, sluice::Steps::One).await.expect("down one on nothing");
    assert_eq!(nothing, Vec::<i64>::new());
    assert_schema_gone(&db.pool).await;
}

#[tokio::test]
async fn up_again_after_down_all_restores_a_working_schema() {
    let db = TestDb::new().await;
    let versions = known_versions(&db.pool).await;

    sluice::migrate_down(&db.pool, sluice::Steps::All).await.expect("down all");
    assert_schema_gone(&db.pool).await;

    let applied = sluice::migrate(&db.pool).await.expect("migrate after down all");
    assert_eq!(applied, versions, "every migration applied again");
    assert_schema_present(&db.pool).await;

    // The restored schema works: its functions, constraints and defaults are back.
    let stream: i32 = sqlx::query_scalar("INSERT INTO sluice.streams (name) VALUES ('orders') RETURNING id")
        .fetch_one(&db.pool)
        .await
        .expect("insert a stream into the restored schema");
    sqlx::query("INSERT INTO sluice.events (stream_id, subject, payload) VALUES ($1, 'orders.eu.created', '{}')")
        .bind(stream)
        .execute(&db.pool)
        .await
        .expect("insert an event into the restored schema");
    let bad = sqlx::query("INSERT INTO sluice.streams (name) VALUES ('has space')").execute(&db.pool).await;
    assert_eq!(check_violation(bad), "streams_name_valid");
}

#[tokio::test]
async fn down_one_at_a_time_ends_with_nothing_left() {
    let db = TestDb::empty().await;
    let before = user_objects(&db.pool).await;
    let mut applied = sluice::migrate(&db.pool).await.expect("migrate");
    assert!(!applied.is_empty());

    while let Some(newest) = applied.pop() {
        let reverted = sluice::migrate_down(&db.pool, sluice::Steps::One).await.expect("down one");
        assert_eq!(reverted, vec![newest], "down one reverts only the newest migration");
        if applied.is_empty() {
            assert_schema_gone(&db.pool).await;
        } else {
            let history: Vec<i64> = sqlx::query_scalar("SELECT version FROM sluice._migrations ORDER BY version")
                .fetch_all(&db.pool)
                .await
                .unwrap();
            assert_eq!(history, applied, "older migrations stay applied");
        }
    }
    assert_eq!(user_objects(&db.pool).await, before, "objects left behind by up + down one");
    let status = sluice::migration_status(&db.pool).await.expect("status");
    assert!(status.iter().all(|s| s.applied_at.is_none()), "all pending again: {status:?}");
}

#[tokio::test]
async fn status_is_pending_before_up_and_applied_after() {
    let db = TestDb::empty().await;

    let pending = sluice::migration_status(&db.pool).await.expect("status on an empty database");
    assert!(pending.iter().any(|s| s.version == 1), "migration 1 listed: {pending:?}");
    assert!(pending.iter().all(|s| s.applied_at.is_none()), "all pending: {pending:?}");
    assert!(pending.iter().all(|s| !s.description.is_empty()), "every migration described: {pending:?}");
    // Asking for the status creates nothing.
    assert_schema_gone(&db.pool).await;

    let started: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&db.pool).await.unwrap();
    sluice::migrate(&db.pool).await.expect("migrate");
    let finished: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&db.pool).await.unwrap();

    let applied = sluice::migration_status(&db.pool).await.expect("status after up");
    assert_eq!(
        applied.iter().map(|s| (s.version, &s.description)).collect::<Vec<_>>(),
        pending.iter().map(|s| (s.version, &s.description)).collect::<Vec<_>>(),
        "the same migrations, now applied"
    );
    for s in &applied {
        let at = s.applied_at.unwrap_or_else(|| panic!("migration {} still pending after up", s.version));
        assert!(
            started <= at && at <= finished,
            "migration {} applied at {at}, outside {started}..{finished}",
            s.version
        );
    }

    sluice::migrate_down(&db.pool, sluice::Steps::All).await.expect("down all");
    let after_down = sluice::migration_status(&db.pool).await.expect("status after down");
    assert!(after_down.iter().all(|s| s.applied_at.is_none()), "pending again after down: {after_down:?}");
}

/// A folder of the application's own sqlx migrations, removed on drop.
struct AppMigrations(PathBuf);

impl AppMigrations {
    fn new() -> AppMigrations {
        let dir = std::env::temp_dir().join(format!("sluice_app_migrations_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create the app's migrations folder");
        std::fs::write(
            dir.join("0001_app.sql"),
            "CREATE TABLE public.app_orders (id bigint PRIMARY KEY, total numeric NOT NULL);\n",
        )
        .expect("write the app's migration");
        AppMigrations(dir)
    }

    async fn migrator(&self) -> sqlx::migrate::Migrator {
        sqlx::migrate::Migrator::new(Path::new(&self.0)).await.expect("the app's migrator")
    }
}

impl Drop for AppMigrations {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// After both runners: both schemas there, each history holds only its own rows.
async fn assert_both_applied(pool: &PgPool) {
    assert_schema_present(pool).await;
    let app_table: bool =
        sqlx::query_scalar("SELECT to_regclass('public.app_orders') IS NOT NULL").fetch_one(pool).await.unwrap();
    assert!(app_table, "public.app_orders exists");

    let app_history: Vec<(i64, String, bool)> =
        sqlx::query_as("SELECT version, description, success FROM public._sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(app_history, vec![(1, "app".to_string(), true)], "the app's history holds only the app's migration");

    let sluice_history: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM sluice._migrations ORDER BY version").fetch_all(pool).await.unwrap();
    assert_eq!(sluice_history, known_versions(pool).await, "Sluice's history holds only Sluice's migrations");

    let sqlx_tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname = '_sqlx_migrations' AND relkind = 'r'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(sqlx_tables, 1, "only the app's _sqlx_migrations table exists");
}

#[tokio::test]
async fn app_migrations_then_sluice_coexist() {
    let db = TestDb::empty().await;
    let app = AppMigrations::new();

    app.migrator().await.run(&db.pool).await.expect("the app's migrations");
    let applied = sluice::migrate(&db.pool).await.expect("Sluice after the app");
    assert!(applied.contains(&1));
    assert_both_applied(&db.pool).await;

    // Running both again, in both orders, is a no-op without error.
    app.migrator().await.run(&db.pool).await.expect("the app's migrations again");
    assert_eq!(sluice::migrate(&db.pool).await.expect("Sluice again"), Vec::<i64>::new());
    app.migrator().await.run(&db.pool).await.expect("the app's migrations a third time");
    assert_both_applied(&db.pool).await;
}

#[tokio::test]
async fn sluice_then_app_migrations_coexist() {
    let db = TestDb::empty().await;
    let app = AppMigrations::new();

    let applied = sluice::migrate(&db.pool).await.expect("Sluice first");
    assert!(applied.contains(&1));
    app.migrator().await.run(&db.pool).await.expect("the app's migrations after Sluice");
    assert_both_applied(&db.pool).await;

    assert_eq!(sluice::migrate(&db.pool).await.expect("Sluice again"), Vec::<i64>::new());
    app.migrator().await.run(&db.pool).await.expect("the app's migrations again");
    assert_both_applied(&db.pool).await;

    // Reverting Sluice leaves the application's schema and history alone.
    sluice::migrate_down(&db.pool, sluice::Steps::All).await.expect("Sluice down all");
    assert_schema_gone(&db.pool).await;
    let app_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM public._sqlx_migrations").fetch_one(&db.pool).await.unwrap();
    assert_eq!(app_rows, 1, "the app's history is untouched");
    let app_table: bool =
        sqlx::query_scalar("SELECT to_regclass('public.app_orders') IS NOT NULL").fetch_one(&db.pool).await.unwrap();
    assert!(app_table, "public.app_orders survives Sluice's down");
}

/// The name of the CHECK constraint that rejected a write; panics on success
/// or on any other error.
fn check_violation<T: std::fmt::Debug>(result: Result<T, sqlx::Error>) -> String {
    match result {
        Ok(v) => panic!("expected a check violation, the write succeeded: {v:?}"),
        Err(sqlx::Error::Database(e)) => {
            assert_eq!(e.code().as_deref(), Some("23514"), "expected check_violation, got: {e}");
            e.constraint().expect("a check violation names its constraint").to_string()
        }
        Err(e) => panic!("expected a check violation, got: {e}"),
    }
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM sluice.{table}")).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn check_constraints_reject_bad_rows_written_by_hand() {
    let db = TestDb::new().await;
    let pool = &db.pool;

    // Streams: names are 1-64 letters, digits, '_' and '-', starting with a letter or digit.
    let stream: i32 = sqlx::query_scalar("INSERT INTO sluice.streams (name) VALUES ('orders') RETURNING id")
        .fetch_one(pool)
        .await
        .expect("a valid stream");
    let too_long = "a".repeat(65);
    for name in ["has space", "", "-lead", "_lead", "dot.ted", "ünïcode", too_long.as_str()] {
        let result = sqlx::query("INSERT INTO sluice.streams (name) VALUES ($1)").bind(name).execute(pool).await;
        assert_eq!(check_violation(result), "streams_name_valid", "stream name {name:?}");
    }
    assert_eq!(count(pool, "streams").await, 1, "rejected streams left no row");

    // Events: priority 1 to 5.
    let insert_event = "INSERT INTO sluice.events (stream_id, subject, payload, priority)
                        VALUES ($1, $2, '{}', $3) RETURNING id";
    for priority in [1i16, 5] {
        sqlx::query(insert_event)
            .bind(stream)
            .bind("orders.eu.created")
            .bind(priority)
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("event priority {priority} rejected: {e}"));
    }
    for priority in [0i16, 6, -1] {
        let result =
            sqlx::query(insert_event).bind(stream).bind("orders.eu.created").bind(priority).execute(pool).await;
        assert_eq!(check_violation(result), "events_priority_range", "event priority {priority}");
    }

    // Events: subjects are dot-separated tokens, no wildcards.
    for subject in ["bad..subject", "", ".lead", "trail.", "has space", "orders.*", "orders.>"] {
        let result = sqlx::query(insert_event).bind(stream).bind(subject).bind(1i16).execute(pool).await;
        assert_eq!(check_violation(result), "events_subject_valid", "subject {subject:?}");
    }
    let priorities: Vec<i16> =
        sqlx::query_scalar("SELECT priority FROM sluice.events ORDER BY id").fetch_all(pool).await.unwrap();
    assert_eq!(priorities, [1, 5], "rejected events left the stored ones unchanged");

    // Tasks: priority 1 to 5.
    let consumer: i32 = sqlx::query_scalar(
        "INSERT INTO sluice.consumers (stream_id, name, position) VALUES ($1, 'c', '1:1:') RETURNING id",
    )
    .bind(stream)
    .fetch_one(pool)
    .await
    .expect("a valid consumer");
    let insert_task = "INSERT INTO sluice.tasks (consumer_id, event_id, priority, position) VALUES ($1, $2, $3, $2)";
    for (event, priority) in [(1i64, 1i16), (2, 5)] {
        sqlx::query(insert_task)
            .bind(consumer)
            .bind(event)
            .bind(priority)
            .execute(pool)
            .await
            .unwrap_or_else(|e| panic!("task priority {priority} rejected: {e}"));
    }
    for (event, priority) in [(3i64, 0i16), (4, 6)] {
        let result = sqlx::query(insert_task).bind(consumer).bind(event).bind(priority).execute(pool).await;
        assert_eq!(check_violation(result), "tasks_priority_range", "task priority {priority}");
    }
    // An update cannot sneak a bad priority in either.
    let result =
        sqlx::query("UPDATE sluice.tasks SET priority = 6 WHERE consumer_id = $1").bind(consumer).execute(pool).await;
    assert_eq!(check_violation(result), "tasks_priority_range", "task priority updated to 6");

    let tasks: Vec<(i64, i16)> =
        sqlx::query_as("SELECT event_id, priority FROM sluice.tasks WHERE consumer_id = $1 ORDER BY event_id")
            .bind(consumer)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(tasks, [(1, 1), (2, 5)], "rejected tasks left the stored ones unchanged");
    assert_eq!(count(pool, "streams").await, 1);
    assert_eq!(count(pool, "events").await, 2);
    assert_eq!(count(pool, "consumers").await, 1);
}

#[tokio::test]
async fn two_racing_migrations_apply_the_schema_once() {
    let db = TestDb::empty().await;
    // Two pools, as two processes starting at once would have.
    let other = sqlx::PgPool::connect_with(db.options().await).await.expect("second pool");

    let (a, b) = tokio::join!(sluice::migrate(&db.pool), sluice::migrate(&other));
    let a = a.expect("first racer");
    let b = b.expect("second racer");

    let versions = known_versions(&db.pool).await;
    assert!(
        (a == versions && b.is_empty()) || (a.is_empty() && b == versions),
        "exactly one racer applies the migrations: {a:?} and {b:?}"
    );
    let history: Vec<i64> = sqlx::query_scalar("SELECT version FROM sluice._migrations ORDER BY version")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(history, versions, "one history row per migration");
    assert_schema_present(&db.pool).await;
    other.close().await;
}

/// The body of `sluice.fetch_v2` as stored.
async fn fetch_body(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT prosrc FROM pg_proc WHERE proname = 'fetch_v2'").fetch_optional(pool).await.unwrap()
}

/// A build that migrates during a rolling deploy never puts an older
/// function body back over a newer one; a changed function file applies
/// again otherwise.
#[tokio::test]
async fn an_older_function_revision_never_replaces_a_newer_one() {
    let db = TestDb::new().await;
    let ours = fetch_body(&db.pool).await.expect("fetch_v2 applied");
    // As if a newer build had applied its revision of the function.
    sqlx::raw_sql(
        "CREATE OR REPLACE FUNCTION sluice.fetch_v2(p_consumer integer, p_worker uuid, p_lease interval, p_limit integer,
                                                   p_chunk integer, p_refill boolean, p_max_bytes bigint)
         RETURNS TABLE (materialized integer, more boolean, busy boolean, event_id bigint, lease_token bigint,
                        attempt integer, priority smallint, \"position\" bigint, subject text, payload text,
                        metadata text, key text, created_at timestamptz)
         LANGUAGE plpgsql AS $$ BEGIN /* a newer revision */ END $$;
         UPDATE sluice._functions SET revision = revision + 1, checksum = 'newer' WHERE name = 'fetch_v2';",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sluice::migrate(&db.pool).await.unwrap();
    let body = fetch_body(&db.pool).await.unwrap();
    assert!(body.contains("a newer revision"), "the newer body stays");
    // An older revision on record is replaced by this build's.
    sqlx::query("UPDATE sluice._functions SET revision = 0 WHERE name = 'fetch_v2'").execute(&db.pool).await.unwrap();
    sluice::migrate(&db.pool).await.unwrap();
    assert_eq!(fetch_body(&db.pool).await.unwrap(), ours);
    // So is a changed text at the same revision (a file being worked on).
    sqlx::query("UPDATE sluice._functions SET checksum = 'edited' WHERE name = 'fetch_v2'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("COMMENT ON FUNCTION sluice.fetch_v2 IS 'stale'").execute(&db.pool).await.unwrap();
    sluice::migrate(&db.pool).await.unwrap();
    let checksum: String = sqlx::query_scalar("SELECT checksum FROM sluice._functions WHERE name = 'fetch_v2'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_ne!(checksum, "edited", "applied again");
}

/// Reverting a migration that the functions do not need keeps them; reverting
/// the one they need drops them first, and `migrate` brings them back.
#[tokio::test]
async fn down_drops_only_the_functions_that_need_the_reverted_migration() {
    let db = TestDb::new().await;
    let newest = || async {
        sqlx::query_scalar::<_, i64>("SELECT max(version) FROM sluice._migrations").fetch_one(&db.pool).await.unwrap()
    };
    let requires: i64 = sqlx::query_scalar("SELECT requires FROM sluice._functions WHERE name = 'fetch_v2'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(requires, 12, "fetch_v2 names the newest migration it needs");
    // Every migration after that one goes without taking fetch_v2 along.
    while newest().await > requires {
        sluice::migrate_down(&db.pool, sluice::Steps::One).await.unwrap();
        assert!(fetch_body(&db.pool).await.is_some(), "fetch_v2 kept");
    }
    let reverted = sluice::migrate_down(&db.pool, sluice::Steps::One).await.unwrap();
    assert_eq!(reverted, [requires]);
    assert!(fetch_body(&db.pool).await.is_none(), "reverting the migration fetch_v2 needs drops it first");
    sluice::migrate(&db.pool).await.unwrap();
    assert_schema_present(&db.pool).await;
}

/// Migrations 7 and 8 add columns and a table the heartbeat writes: a
/// worker role granted the heartbeat's columns one by one (docs/SECURITY.md)
/// gets the new ones, or its heartbeats would fail after the upgrade.
#[tokio::test]
async fn the_worker_rates_migrations_extend_column_grants_on_the_heartbeat() {
    let db = TestDb::new().await;
    let newest = || async {
        sqlx::query_scalar::<_, i64>("SELECT max(version) FROM sluice._migrations").fetch_one(&db.pool).await.unwrap()
    };
    while newest().await > 6 {
        sluice::migrate_down(&db.pool, sluice::Steps::One).await.expect("down one");
    }
    let role = format!("sluice_hb_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE \"{role}\"")).execute(&db.pool).await.unwrap();
    sqlx::query(&format!("GRANT UPDATE (heartbeat_at, status, dead_after) ON sluice.workers TO \"{role}\""))
        .execute(&db.pool)
        .await
        .unwrap();
    sluice::migrate(&db.pool).await.expect("up to the newest");
    let may: (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT has_column_privilege($1, 'sluice.workers', 'completed_last_minute', 'UPDATE'),
                has_column_privilege($1, 'sluice.workers', 'failed_last_minute', 'UPDATE'),
                has_table_privilege($1, 'sluice.throughput', 'SELECT, INSERT, DELETE'),
                has_column_privilege($1, 'sluice.throughput', 'completed', 'UPDATE')",
    )
    .bind(&role)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query(&format!("DROP OWNED BY \"{role}\"")).execute(&db.pool).await.unwrap();
    sqlx::query(&format!("DROP ROLE \"{role}\"")).execute(&db.pool).await.unwrap();
    assert_eq!(may, (true, true, true, true));
}

/// The v1 claim functions (`sluice.fetch`, `sluice.refill`) bypassed FIFO
/// per key, a replay's start and the lease tokens: migration 13 drops them,
/// and reverting it brings back only stand-ins that refuse to run (so that
/// 0001's down still finds what it drops).
#[tokio::test]
async fn the_v1_claim_functions_are_gone_and_reverting_does_not_bring_them_back() {
    let db = TestDb::new().await;
    let v1 = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'sluice' AND p.proname IN ('fetch', 'refill') ORDER BY 1",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap()
    };
    assert!(v1().await.is_empty(), "the v1 functions are still installed: {:?}", v1().await);

    while sqlx::query_scalar::<_, i64>("SELECT max(version) FROM sluice._migrations").fetch_one(&db.pool).await.unwrap()
        >= 13
    {
        sluice::migrate_down(&db.pool, sluice::Steps::One).await.unwrap();
    }
    assert_eq!(v1().await, ["fetch", "refill"], "stand-ins for 0001's down");
    for call in ["SELECT sluice.refill(1, 10)", "SELECT sluice.fetch(1, NULL, NULL, 1, 10, true)"] {
        let err = sqlx::query(call).execute(&db.pool).await.unwrap_err();
        let db_err = err.as_database_error().expect("a database error");
        assert_eq!(db_err.code().as_deref(), Some("0A000"), "{call}: {err}");
        assert!(db_err.message().contains("removed by migration 13"), "{call}: {err}");
    }
    // All the way down and up again.
    sluice::migrate_down(&db.pool, sluice::Steps::All).await.unwrap();
    sluice::migrate(&db.pool).await.unwrap();
    assert!(v1().await.is_empty());
}
