//! The bench's own database (created fresh, dropped at the end) and the few
//! statistics queries the bench needs. Everything else goes through Sluice's
//! public API.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

/// Tasks of a consumer not yet acked (acked tasks are deleted by default).
const REMAINING_TASKS: &str = "SELECT count(*) FROM sluice.tasks WHERE consumer_id = $1";

/// The id of a consumer, to count its tasks.
const CONSUMER_ID: &str = "SELECT c.id FROM sluice.consumers c JOIN sluice.streams s ON s.id = c.stream_id \
                           WHERE s.name = $1 AND c.name = $2";

/// Live and dead tuples of Sluice's two big tables, with their size (indexes included).
const TABLE_STATS: &str = "SELECT relname::text, n_live_tup, n_dead_tup, autovacuum_count + vacuum_count, \
                           pg_total_relation_size(relid) \
                           FROM pg_stat_user_tables WHERE schemaname = 'sluice' AND relname IN ('tasks', 'events')";

/// The server given by `--database-url`.
pub fn server(url: &str) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).context("--database-url is not a Postgres URL")
}

/// A database of the bench's own on the server it was given: one per
/// scenario, so no scenario inherits another's rows or dead tuples.
pub struct BenchDb {
    server: PgConnectOptions,
    options: PgConnectOptions,
    name: String,
}

impl BenchDb {
    /// Creates `sluice_bench_<run>_<scenario>` on the server and runs Sluice's
    /// migrations in it. `settings` become the database's defaults
    /// (`ALTER DATABASE … SET`).
    pub async fn create(
        server: &PgConnectOptions,
        run: &str,
        scenario: &str,
        settings: &[(String, String)],
    ) -> anyhow::Result<BenchDb> {
        let name = format!("sluice_bench_{run}_{scenario}");
        let mut admin = server.connect().await.context("connecting to the server")?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .context("creating the database")?;
        for (setting, value) in settings {
            let value = value.replace('\'', "''");
            sqlx::query(&format!("ALTER DATABASE \"{name}\" SET {setting} = '{value}'"))
                .execute(&mut admin)
                .await
                .with_context(|| format!("setting {setting} on the database"))?;
        }
        admin.close().await.ok();
        let db = BenchDb { options: server.clone().database(&name), server: server.clone(), name };
        let pool = db.pool(2).await?;
        let mut migrated = sluice::migrate(&pool).await.context("running Sluice's migrations").map(|_| ());
        if let (Ok(()), Some(span)) = (&migrated, crate::work::STORAGE.get().and_then(|s| s.1)) {
            // Small partitions from now on: the empty one the migration made
            // ahead (a million transaction ids) goes.
            migrated = sqlx::query("UPDATE sluice.event_partitioning SET span = $1, every = '1 second'")
                .bind(span)
                .execute(&pool)
                .await
                .map(|_| ())
                .context("setting the partition span");
            if migrated.is_ok() {
                migrated = sqlx::raw_sql(
                    "DO $$ DECLARE p text; BEGIN
                         FOR p IN SELECT name FROM sluice.event_partitions WHERE name <> 'events_0' LOOP
                             EXECUTE format('DROP TABLE sluice.%I', p);
                             DELETE FROM sluice.event_partitions WHERE name = p;
                         END LOOP;
                     END $$",
                )
                .execute(&pool)
                .await
                .map(|_| ())
                .context("dropping the empty partition made ahead");
            }
        }
        pool.close().await;
        if let Err(e) = migrated {
            db.drop_database().await.ok();
            return Err(e);
        }
        Ok(db)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL, for the worker processes.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// A new pool of at most `max` connections on the bench database.
    pub async fn pool(&self, max: u32) -> anyhow::Result<PgPool> {
        pool(self.options.clone(), max).await
    }

    /// A single connection outside any pool (the pinning transaction).
    pub async fn connect(&self) -> anyhow::Result<PgConnection> {
        Ok(self.options.connect().await?)
    }

    /// Drops the database, disconnecting whoever is still on it.
    pub async fn drop_database(&self) -> anyhow::Result<()> {
        let mut admin = self.server.connect().await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)).execute(&mut admin).await?;
        admin.close().await.ok();
        Ok(())
    }
}

pub async fn pool(options: PgConnectOptions, max: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .context("connecting to the bench database")
}

pub async fn consumer_id(pool: &PgPool, stream: &str, consumer: &str) -> anyhow::Result<i32> {
    Ok(sqlx::query_scalar(CONSUMER_ID).bind(stream).bind(consumer).fetch_one(pool).await?)
}

pub async fn remaining_tasks(pool: &PgPool, consumer_id: i32) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(REMAINING_TASKS).bind(consumer_id).fetch_one(pool).await?)
}

/// `pg_stat_user_tables` for one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStats {
    pub live: i64,
    pub dead: i64,
    pub vacuums: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Bloat {
    pub tasks: TableStats,
    pub events: TableStats,
}

impl Bloat {
    /// Reads the statistics. Backends report their counts when they go idle
    /// or exit (at most once a second), so callers close their pools and wait
    /// a little first; this forces out the reading session's own counts.
    pub async fn read(pool: &PgPool) -> anyhow::Result<Bloat> {
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_stat_force_next_flush()").execute(&mut *conn).await?;
        sqlx::query("SELECT pg_stat_clear_snapshot()").execute(&mut *conn).await?;
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(TABLE_STATS).fetch_all(&mut *conn).await?;
        let mut b = Bloat::default();
        for (rel, live, dead, vacuums, bytes) in rows {
            let s = TableStats { live, dead, vacuums, bytes };
            match rel.as_str() {
                "tasks" => b.tasks = s,
                _ => b.events = s,
            }
        }
        Ok(b)
    }

    pub fn human(&self) -> String {
        format!(
            "dead tuples: tasks {} (live {}, {} vacuums, {}), events {} (live {}, {})",
            self.tasks.dead,
            self.tasks.live,
            self.tasks.vacuums,
            crate::report::bytes(self.tasks.bytes),
            self.events.dead,
            self.events.live,
            crate::report::bytes(self.events.bytes),
        )
    }
}

/// Rows, dead rows and size of one of Sluice's tables, from
/// [`sluice::storage_stats`] (the server's statistics: they lag a little
/// behind busy sessions).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableSize {
    pub live_rows: i64,
    pub dead_rows: i64,
    pub total_bytes: i64,
}

/// `sluice.tasks` and `sluice.events` as [`sluice::storage_stats`] reports them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storage {
    pub tasks: TableSize,
    pub events: TableSize,
}

impl Storage {
    pub async fn read(pool: &PgPool) -> anyhow::Result<Storage> {
        let stats = sluice::storage_stats(pool).await.context("reading sluice::storage_stats")?;
        let size = |name: &str| {
            stats.table(name).map_or_else(TableSize::default, |t| TableSize {
                live_rows: t.live_rows,
                dead_rows: t.dead_rows,
                total_bytes: t.total_bytes,
            })
        };
        Ok(Storage { tasks: size("tasks"), events: size("events") })
    }

    /// `tasks 1,234 dead, 5.2 MiB; events 0 dead, 3.1 MiB`.
    pub fn human(&self) -> String {
        use crate::report::{bytes, count};
        format!(
            "tasks {} dead, {}; events {} dead, {}",
            count(self.tasks.dead_rows as f64),
            bytes(self.tasks.total_bytes),
            count(self.events.dead_rows as f64),
            bytes(self.events.total_bytes),
        )
    }
}
