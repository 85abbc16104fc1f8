//! How Sluice's statements reach Postgres through a connection pooler.
//!
//! sqlx runs a statement in two exchanges: it parses it (and waits for the
//! server's answer), then binds and executes it. A pooler in transaction
//! mode may hand the second exchange to another server connection when no
//! transaction is open, and without prepared-statement tracking (PgBouncer
//! before 1.21, or later without `max_prepared_statements`) that connection
//! has never seen the statement. [`Pooling::Transactions`] keeps both
//! exchanges in one transaction of their own.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the statements Sluice runs on a pool go: straight to Postgres, or
/// through a pooler that does not keep prepared statements. Set once per
/// process with [`set_pooling`], before the first subscriber starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooling {
    /// Straight to Postgres, or through a pooler that keeps each client's
    /// prepared statements: PgBouncer in session mode, or 1.21 and later with
    /// `max_prepared_statements` > 0. Statements are prepared once per
    /// connection and reused.
    #[default]
    Direct,
    /// Through a pooler in transaction mode that does not keep prepared
    /// statements (PgBouncer before 1.21). Every statement Sluice runs on a
    /// pool goes, unnamed, into a transaction of its own; a publish, ack,
    /// nack or defer given a connection already in a transaction runs in
    /// it, unnamed. Two round trips more per statement outside a
    /// transaction, so prefer a
    /// pooler that keeps prepared statements. Subscriptions without a
    /// [`listen_url`](crate::Subscription::listen_url) poll: LISTEN through
    /// such a pooler never hears anything.
    Transactions,
}

static POOLING: AtomicU8 = AtomicU8::new(0);

/// Sets how this process's Sluice statements reach Postgres (default
/// [`Pooling::Direct`]); returns the previous setting. Statements already
/// under way finish as they started.
pub fn set_pooling(pooling: Pooling) -> Pooling {
    decode(POOLING.swap(pooling as u8, Ordering::Relaxed))
}

/// How this process's Sluice statements reach Postgres (see [`set_pooling`]).
pub fn pooling() -> Pooling {
    decode(POOLING.load(Ordering::Relaxed))
}

pub(crate) fn in_transactions() -> bool {
    pooling() == Pooling::Transactions
}

fn decode(stored: u8) -> Pooling {
    if stored == Pooling::Transactions as u8 {
        Pooling::Transactions
    } else {
        Pooling::Direct
    }
}

/// `on_pool!(pool, query, method)`: runs sqlx's `query.method(pool)`, or,
/// under [`Pooling::Transactions`], the query unnamed in a transaction of its
/// own. A future of `Result<_, sqlx::Error>`.
macro_rules! on_pool {
    ($pool:expr, $query:expr, $method:ident) => {
        async {
            if $crate::pooler::in_transactions() {
                $crate::pooler::in_own_transaction!($pool, $query, $method)
            } else {
                $query.$method($pool).await
            }
        }
    };
}

/// `in_own_transaction!(begins, query, method)`: begins a transaction on
/// `begins` (a pool or a connection), runs the query unnamed in it, and
/// commits. Awaited in place; its value is a `Result<_, sqlx::Error>`.
macro_rules! in_own_transaction {
    ($begins:expr, $query:expr, $method:ident) => {{
        let mut tx = $begins.begin().await?;
        let out = $query.persistent(false).$method(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(out)
    }};
}

/// Where a statement of Sluice's runs: a pool, or a connection (perhaps in
/// the caller's transaction). Made from `&PgPool`, `&mut PgConnection`
/// (`&mut *tx`), `&mut Transaction` or `&mut PoolConnection`.
pub enum Db<'c> {
    /// A connection from the pool, for this statement.
    Pool(&'c sqlx::PgPool),
    /// The caller's connection.
    Conn(&'c mut sqlx::PgConnection),
}

impl<'c> From<&'c sqlx::PgPool> for Db<'c> {
    fn from(pool: &'c sqlx::PgPool) -> Self {
        Db::Pool(pool)
    }
}

impl<'c> From<&'c mut sqlx::PgConnection> for Db<'c> {
    fn from(conn: &'c mut sqlx::PgConnection) -> Self {
        Db::Conn(conn)
    }
}

impl<'c, 't> From<&'c mut sqlx::Transaction<'t, sqlx::Postgres>> for Db<'c> {
    fn from(tx: &'c mut sqlx::Transaction<'t, sqlx::Postgres>) -> Self {
        Db::Conn(tx)
    }
}

impl<'c> From<&'c mut sqlx::pool::PoolConnection<sqlx::Postgres>> for Db<'c> {
    fn from(conn: &'c mut sqlx::pool::PoolConnection<sqlx::Postgres>) -> Self {
        Db::Conn(conn)
    }
}

/// `on_db!(db, query, method)`: runs `query.method(..)` on a [`Db`]. Under
/// [`Pooling::Transactions`], unnamed, in a transaction of its own (on a
/// pool, or on a connection outside a transaction); in the caller's
/// transaction as it is.
macro_rules! on_db {
    ($db:expr, $query:expr, $method:ident) => {
        async {
            use sqlx::Connection as _;
            match $db {
                $crate::pooler::Db::Pool(pool) => $crate::pooler::on_pool!(pool, $query, $method).await,
                $crate::pooler::Db::Conn(conn) if $crate::pooler::in_transactions() && !conn.is_in_transaction() => {
                    $crate::pooler::in_own_transaction!(conn, $query, $method)
                }
                $crate::pooler::Db::Conn(conn) if $crate::pooler::in_transactions() => {
                    $query.persistent(false).$method(&mut *conn).await
                }
                $crate::pooler::Db::Conn(conn) => $query.$method(&mut *conn).await,
            }
        }
    };
}

pub(crate) use {in_own_transaction, on_db, on_pool};
