//! What every example does first: connect to the database you name.
//!
//! In your own program this is `PgPool::connect(&url)` with your
//! configuration's URL; the examples add a local default and an error that
//! says what to do.

use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::Connection;

/// The database the examples use when `DATABASE_URL` is not set: the
/// `postgres` database of a server on this machine (`just db-up` starts one
/// in Docker).
pub const LOCAL_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A pool on the database named by `DATABASE_URL`, or on
/// [`LOCAL_DATABASE_URL`] when it is unset. The examples use that database
/// and no other.
///
/// With neither (no `DATABASE_URL`, nothing on 127.0.0.1:5432) but Docker
/// running, the example starts a throwaway Postgres container and says so:
/// what the example leaves behind then goes with the container.
pub async fn connect() -> anyhow::Result<PgPool> {
    let url = std::env::var("DATABASE_URL").ok();
    let mut options = PgConnectOptions::from_str(url.as_deref().unwrap_or(LOCAL_DATABASE_URL))
        .context("DATABASE_URL is not a Postgres URL")?;
    if url.is_none() && PgConnection::connect_with(&options).await.is_err() {
        if let Some(container) = docker_postgres().await {
            println!("nothing answers on 127.0.0.1:5432: using a throwaway Postgres container");
            options = container;
        }
    }
    // Named without the password, which the URL may hold.
    let database = format!(
        "database {} on {}:{} as {}",
        options.get_database().unwrap_or(options.get_username()),
        options.get_host(),
        options.get_port(),
        options.get_username()
    );
    // One connection first, which fails at once with the reason (refused, no
    // such database, bad password); a pool would keep trying for its acquire
    // timeout (30 s) and then only say that it timed out.
    let first = PgConnection::connect_with(&options).await.with_context(|| {
        format!(
            "cannot connect to {database}: set DATABASE_URL to a Postgres 14+ database, \
             or start one on 127.0.0.1:5432 (`just db-up` runs one in Docker)"
        )
    })?;
    first.close().await?;
    let pool = PgPool::connect_with(options).await.with_context(|| format!("cannot connect to {database}"))?;
    println!("using {database}");
    Ok(pool)
}

/// A Postgres 15 container, kept for the life of the process, when Docker
/// runs; none otherwise.
async fn docker_postgres() -> Option<PgConnectOptions> {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::ImageExt;

    let docker = std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !docker.is_ok_and(|s| s.success()) {
        return None;
    }
    let container = Postgres::default().with_tag("15-alpine").start().await.ok()?;
    let port = container.get_host_port_ipv4(5432).await.ok()?;
    // Removed by testcontainers when the process ends.
    Box::leak(Box::new(container));
    Some(PgConnectOptions::new().host("127.0.0.1").port(port).username("postgres").password("postgres"))
}
