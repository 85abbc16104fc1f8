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
    /// nack or defer given a connection already in a transaction runs in a
    /// savepoint of it. Two round trips more per statement, so prefer a
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
    let was = POOLING.swap(pooling as u8, Ordering::Relaxed);
    if was == Pooling::Transactions as u8 {
        Pooling::Transactions
    } else {
        Pooling::Direct
    }
}

/// How this process's Sluice statements reach Postgres (see [`set_pooling`]).
pub fn pooling() -> Pooling {
    if in_transactions() {
        Pooling::Transactions
    } else {
        Pooling::Direct
    }
}

pub(crate) fn in_transactions() -> bool {
    POOLING.load(Ordering::Relaxed) == Pooling::Transactions as u8
}

/// `on_pool!(pool, query, method)`: runs sqlx's `query.method(pool)`, or,
/// under [`Pooling::Transactions`], the query unnamed in a transaction of its
/// own. A future of `Result<_, sqlx::Error>`.
macro_rules! on_pool {
    ($pool:expr, $query:expr, $method:ident) => {
        async {
            if $crate::pooler::in_transactions() {
                let mut tx = $pool.begin().await?;
                let out = $query.persistent(false).$method(&mut *tx).await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(out)
            } else {
                $query.$method($pool).await
            }
        }
    };
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
                    let mut tx = conn.begin().await?;
                    let out = $query.persistent(false).$method(&mut *tx).await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(out)
                }
                $crate::pooler::Db::Conn(conn) if $crate::pooler::in_transactions() => {
                    $query.persistent(false).$method(&mut *conn).await
                }
                $crate::pooler::Db::Conn(conn) => $query.$method(&mut *conn).await,
            }
        }
    };
}

pub(crate) use {on_db, on_pool};
