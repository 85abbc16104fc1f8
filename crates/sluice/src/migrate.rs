//! Sluice's own migration runner.
//!
//! The migrations in the top-level `migrations/` folder are embedded at build
//! time. Their history lives in `sluice._migrations`, apart from the
//! application's `_sqlx_migrations`, so an application that also runs sqlx
//! migrations in the same database never sees Sluice's (nor the reverse).

use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Acquire, PgConnection, PgPool};

use crate::error::MigrateError;

static EMBEDDED: Migrator = sqlx::migrate!("../../migrations");

/// Stored functions whose bodies change with the claim logic, one file each in
/// `migrations/functions/`, named after the function it defines. They are
/// re-applied after the numbered migrations when their text changed
/// (repeatable migrations, as Flyway's `R__` files), so a change to the claim
/// is a diff of one file — unless the applied one has a newer revision (a
/// header line `-- revision: N`): an older build that migrates during a
/// rolling deploy never puts an older body back. A change of signature or meaning gets a
/// new name (`fetch_v3`), so old and new workers can run side by side.
const FUNCTIONS: &[Function] = &[
    Function::new("ack_v1", include_str!("../../../migrations/functions/ack_v1.sql")),
    Function::new("fetch_v2", include_str!("../../../migrations/functions/fetch_v2.sql")),
    Function::new(
        "maintain_event_partitions",
        include_str!("../../../migrations/functions/maintain_event_partitions.sql"),
    ),
];

/// A file of `migrations/functions/`: the function it defines, its text,
/// its revision, and the newest migration it needs (`-- requires: N`):
/// reverting that migration or an earlier one drops the function.
struct Function {
    name: &'static str,
    sql: &'static str,
}

impl Function {
    const fn new(name: &'static str, sql: &'static str) -> Function {
        Function { name, sql }
    }

    /// The number after `-- <key>:` in the file's header, 0 without one.
    fn header(&self, key: &str) -> i64 {
        let prefix = format!("-- {key}:");
        self.sql
            .lines()
            .take_while(|l| l.starts_with("--"))
            .find_map(|l| l.strip_prefix(&prefix).and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }

    fn revision(&self) -> i64 {
        self.header("revision")
    }

    fn requires(&self) -> i64 {
        self.header("requires")
    }
}

/// Held for the whole run so that two processes never migrate at once.
/// Advisory locks are per database, so tests in other databases don't wait.
const LOCK_KEY: i64 = 0x736c_7569_6365_0001;

/// One migration and whether it is applied, as `sluice migrate status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// The migration's number.
    pub version: i64,
    /// Its description (the file name after the number).
    pub description: String,
    /// When it was applied, or `None` when it is pending.
    pub applied_at: Option<DateTime<Utc>>,
}

/// How many steps `migrate_down` reverts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steps {
    /// Revert only the latest applied migration.
    One,
    /// Revert every applied migration, leaving no Sluice table, type or function behind.
    All,
}

/// Applies every pending Sluice migration, each in its own transaction.
/// Returns the versions applied by this call (empty when up to date).
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), sluice::MigrateError> {
/// sluice::migrate(&pool).await?;
/// # Ok(()) }
/// ```
#[tracing::instrument(name = "sluice.migrate", skip_all)]
pub async fn migrate(pool: &PgPool) -> Result<Vec<i64>, MigrateError> {
    let mut conn = pool.acquire().await?;
    lock(&mut conn).await?;
    let result = up(&mut conn).await;
    unlock(&mut conn, result).await
}

/// Reverts the latest applied migration, or all of them. Returns the versions
/// reverted, newest first. After [`Steps::All`] the schema `sluice` is gone.
#[tracing::instrument(name = "sluice.migrate_down", skip_all, fields(steps = ?steps))]
pub async fn migrate_down(pool: &PgPool, steps: Steps) -> Result<Vec<i64>, MigrateError> {
    let mut conn = pool.acquire().await?;
    lock(&mut conn).await?;
    let result = down(&mut conn, steps).await;
    unlock(&mut conn, result).await
}

/// Every migration this build knows, and any applied one it does not, with
/// when each was applied.
pub async fn migration_status(pool: &PgPool) -> Result<Vec<MigrationStatus>, MigrateError> {
    let mut conn = pool.acquire().await?;
    let applied = applied(&mut conn).await?;
    let mut out: Vec<MigrationStatus> = ups()
        .map(|m| MigrationStatus {
            version: m.version,
            description: m.description.to_string(),
            applied_at: applied.iter().find(|a| a.version == m.version).map(|a| a.applied_at),
        })
        .collect();
    for a in &applied {
        if !out.iter().any(|s| s.version == a.version) {
            out.push(MigrationStatus {
                version: a.version,
                description: a.description.clone(),
                applied_at: Some(a.applied_at),
            });
        }
    }
    out.sort_by_key(|s| s.version);
    Ok(out)
}

async fn lock(conn: &mut PgConnection) -> Result<(), MigrateError> {
    sqlx::query("SELECT pg_advisory_lock($1)").bind(LOCK_KEY).execute(&mut *conn).await?;
    Ok(())
}

/// Releases the lock whatever the result; the result's error comes first.
async fn unlock<T>(conn: &mut PgConnection, result: Result<T, MigrateError>) -> Result<T, MigrateError> {
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_KEY).execute(&mut *conn).await;
    let value = result?;
    unlocked?;
    Ok(value)
}

struct Applied {
    version: i64,
    description: String,
    checksum: Vec<u8>,
    applied_at: DateTime<Utc>,
}

fn ups() -> impl Iterator<Item = &'static Migration> {
    EMBEDDED.iter().filter(|m| matches!(m.migration_type, MigrationType::ReversibleUp | MigrationType::Simple))
}

fn down_of(version: i64) -> Option<&'static Migration> {
    EMBEDDED.iter().find(|m| m.version == version && m.migration_type == MigrationType::ReversibleDown)
}

async fn applied(conn: &mut PgConnection) -> Result<Vec<Applied>, MigrateError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('sluice._migrations') IS NOT NULL").fetch_one(&mut *conn).await?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, Vec<u8>, DateTime<Utc>)> =
        sqlx::query_as("SELECT version, description, checksum, applied_at FROM sluice._migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(version, description, checksum, applied_at)| Applied { version, description, checksum, applied_at })
        .collect())
}

async fn up(conn: &mut PgConnection) -> Result<Vec<i64>, MigrateError> {
    // Only when missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE
    // privilege even when the schema exists, and an up-to-date database
    // should not need it.
    let installed: bool =
        sqlx::query_scalar("SELECT to_regclass('sluice._migrations') IS NOT NULL").fetch_one(&mut *conn).await?;
    if !installed {
        sqlx::raw_sql(
            "CREATE SCHEMA IF NOT EXISTS sluice;
         CREATE TABLE IF NOT EXISTS sluice._migrations (
             version      bigint PRIMARY KEY,
             description  text NOT NULL,
             checksum     bytea NOT NULL,
             applied_at   timestamptz NOT NULL DEFAULT now(),
             execution_ms bigint NOT NULL
         );",
        )
        .execute(&mut *conn)
        .await?;
    }

    let applied = applied(conn).await?;
    for a in &applied {
        match ups().find(|m| m.version == a.version) {
            None => return Err(MigrateError::UnknownVersion { version: a.version }),
            Some(m) if *m.checksum != *a.checksum => {
                return Err(MigrateError::ChecksumMismatch { version: a.version, description: a.description.clone() })
            }
            Some(_) => {}
        }
    }

    let mut done = Vec::new();
    for m in ups().filter(|m| !applied.iter().any(|a| a.version == m.version)) {
        let started = std::time::Instant::now();
        let failed =
            |source| MigrateError::Failed { version: m.version, description: m.description.to_string(), source };
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(&m.sql).execute(&mut *tx).await.map_err(failed)?;
        sqlx::query(
            "INSERT INTO sluice._migrations (version, description, checksum, execution_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .bind(started.elapsed().as_millis() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version = m.version, description = %m.description, "applied Sluice migration");
        done.push(m.version);
    }
    apply_functions(conn).await?;
    Ok(done)
}

/// Applies each function file whose text changed, unless a newer revision is applied.
async fn apply_functions(conn: &mut PgConnection) -> Result<(), MigrateError> {
    let installed: bool =
        sqlx::query_scalar("SELECT to_regclass('sluice._functions') IS NOT NULL").fetch_one(&mut *conn).await?;
    if !installed {
        sqlx::raw_sql(
            "CREATE TABLE sluice._functions (
                 name       text PRIMARY KEY,
                 revision   bigint NOT NULL,
                 requires   bigint NOT NULL,
                 checksum   text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .execute(&mut *conn)
        .await?;
    } else {
        // The table of a build before revisions (nothing released had it);
        // looked up first, so an up-to-date database needs no ALTER right.
        let has_revision: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                            WHERE table_schema = 'sluice' AND table_name = '_functions' AND column_name = 'revision')",
        )
        .fetch_one(&mut *conn)
        .await?;
        if !has_revision {
            sqlx::raw_sql(
                "ALTER TABLE sluice._functions
                     ADD COLUMN revision bigint NOT NULL DEFAULT 0,
                     ADD COLUMN requires bigint NOT NULL DEFAULT 0",
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    for function in FUNCTIONS {
        let name = function.name;
        let applied: Option<(i64, bool)> =
            sqlx::query_as("SELECT revision, checksum = md5($2) FROM sluice._functions WHERE name = $1")
                .bind(name)
                .bind(function.sql)
                .fetch_optional(&mut *conn)
                .await?;
        match applied {
            // A newer build's revision: never put an older body back.
            Some((revision, _)) if revision > function.revision() => continue,
            // The same text.
            Some((revision, true)) if revision == function.revision() => continue,
            // Newer, or changed at the same revision (a file being worked on).
            _ => {}
        }
        let failed = |source| MigrateError::Failed { version: 0, description: format!("function {name}"), source };
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(function.sql).execute(&mut *tx).await.map_err(failed)?;
        sqlx::query(
            "INSERT INTO sluice._functions (name, revision, requires, checksum) VALUES ($1, $2, $3, md5($4))
             ON CONFLICT (name) DO UPDATE
             SET revision = excluded.revision, requires = excluded.requires, checksum = excluded.checksum,
                 applied_at = now()",
        )
        .bind(name)
        .bind(function.revision())
        .bind(function.requires())
        .bind(function.sql)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(function = name, "applied Sluice function");
    }
    Ok(())
}

/// Drops the functions of `migrations/functions/` (all overloads of each
/// name) that need migration `version` or a later one, before it is
/// reverted; with `version` 0 (nothing of Sluice's left) every one, and the
/// runner's table of them. The next `migrate` of whichever build runs then
/// applies its own.
async fn drop_functions(conn: &mut PgConnection, version: i64) -> Result<(), sqlx::Error> {
    let installed: bool =
        sqlx::query_scalar("SELECT to_regclass('sluice._functions') IS NOT NULL").fetch_one(&mut *conn).await?;
    if !installed {
        return Ok(());
    }
    // The names come from the catalog and the runner's own table, never from input.
    sqlx::raw_sql(
        "CREATE FUNCTION pg_temp.sluice_drop_function(f regprocedure) RETURNS void LANGUAGE plpgsql AS
         $$ BEGIN EXECUTE 'DROP FUNCTION ' || f; END $$",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "SELECT count(pg_temp.sluice_drop_function(p.oid::regprocedure)) FROM pg_proc p
         JOIN sluice._functions a ON a.name = p.proname
         WHERE p.pronamespace = 'sluice'::regnamespace AND a.requires >= $1",
    )
    .bind(version)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM sluice._functions WHERE requires >= $1").bind(version).execute(&mut *conn).await?;
    sqlx::raw_sql("DROP FUNCTION pg_temp.sluice_drop_function(regprocedure)").execute(&mut *conn).await?;
    if version == 0 {
        sqlx::raw_sql("DROP TABLE sluice._functions").execute(&mut *conn).await?;
    }
    Ok(())
}

async fn down(conn: &mut PgConnection, steps: Steps) -> Result<Vec<i64>, MigrateError> {
    let mut applied = applied(conn).await?;
    let mut done = Vec::new();
    while let Some(last) = applied.pop() {
        let Some(m) = down_of(last.version) else {
            return Err(MigrateError::UnknownVersion { version: last.version });
        };
        // Functions written against this migration go first; the last
        // revert takes them all with the runner's table.
        drop_functions(conn, if applied.is_empty() { 0 } else { m.version }).await?;
        let failed =
            |source| MigrateError::Failed { version: m.version, description: m.description.to_string(), source };
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(&m.sql).execute(&mut *tx).await.map_err(failed)?;
        sqlx::query("DELETE FROM sluice._migrations WHERE version = $1").bind(m.version).execute(&mut *tx).await?;
        if applied.is_empty() {
            // Nothing of Sluice's is left: remove the history and the schema.
            // RESTRICT (the default) refuses if someone else's object is in it.
            sqlx::raw_sql("DROP TABLE sluice._migrations; DROP SCHEMA sluice;")
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        tx.commit().await?;
        tracing::info!(version = m.version, description = %m.description, "reverted Sluice migration");
        done.push(m.version);
        if steps == Steps::One {
            break;
        }
    }
    Ok(done)
}
