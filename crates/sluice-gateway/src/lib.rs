//! Sluice over WebSocket, for clients in any language (protocol `sluice.v1`,
//! written down in docs/GATEWAY.md): each client logs in by signing a fresh
//! nonce with its Ed25519 key, registered with `sluice gateway key add`, and
//! publishes events, one or a batch, with idempotency keys so that a retried
//! publish is stored once, and takes tasks from consumers with a credit,
//! settling each by its lease token.
//!
//! `sluice serve` mounts [`router`] at `/gateway`; an application can mount
//! it in its own axum app too:
//!
//! ```no_run
//! # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = sluice_gateway::router(sluice_gateway::GatewayState::new(pool));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9187").await?;
//! axum::serve(listener, gateway).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sqlx::PgPool;
use tokio::time::Instant;
use tracing::warn;

mod auth;
mod connection;
mod deliver;
mod keys;
mod protocol;
mod publish;
mod sql;

pub use auth::signed_message;
pub use connection::{PING_EVERY, REVOCATION_CHECK, SILENCE_LIMIT};
pub use keys::{add_key, decode_public_key, list_keys, revoke_key, GatewayKey, KeyError, NewKey};
pub use protocol::{Code, AUTH_CONTEXT, PROTOCOL};
pub use publish::MAX_IDEMPOTENCY_KEY;

/// Where [`router`] serves the gateway.
pub const PATH: &str = "/gateway";

/// The gateway's limits; each breach is an error frame (docs/GATEWAY.md).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest frame a client may send, in bytes (default 1 MiB).
    pub max_frame_bytes: usize,
    /// The most events in one publish (default 500).
    pub max_batch: usize,
    /// The most connections one key may have open to this server (default 16).
    pub max_connections_per_key: usize,
    /// The most connections not logged in yet (between the upgrade and the
    /// welcome) this server holds at once (default 256); past it an
    /// upgrade is refused with HTTP 503.
    pub max_unauthenticated: usize,
    /// How long a client has to answer the challenge (default 10 s).
    pub auth_timeout: Duration,
    /// The most credit (tasks in the client's hands) one subscription may
    /// have (default 1,000).
    pub max_credit: usize,
    /// How long a client may hold a delivered task without settling or
    /// extending it before that attempt fails (default 5 minutes).
    pub settle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: 1024 * 1024,
            max_batch: 500,
            max_connections_per_key: 16,
            max_unauthenticated: 256,
            auth_timeout: Duration::from_secs(10),
            max_credit: 1000,
            settle_timeout: Duration::from_secs(300),
        }
    }
}

impl Limits {
    /// Sets [`Limits::max_frame_bytes`].
    pub fn max_frame_bytes(mut self, bytes: usize) -> Limits {
        self.max_frame_bytes = bytes;
        self
    }

    /// Sets [`Limits::max_batch`].
    pub fn max_batch(mut self, events: usize) -> Limits {
        self.max_batch = events;
        self
    }

    /// Sets [`Limits::max_connections_per_key`].
    pub fn max_connections_per_key(mut self, connections: usize) -> Limits {
        self.max_connections_per_key = connections;
        self
    }

    /// Sets [`Limits::max_unauthenticated`].
    pub fn max_unauthenticated(mut self, connections: usize) -> Limits {
        self.max_unauthenticated = connections;
        self
    }

    /// Sets [`Limits::max_credit`].
    pub fn max_credit(mut self, credit: usize) -> Limits {
        self.max_credit = credit;
        self
    }

    /// Sets [`Limits::settle_timeout`].
    pub fn settle_timeout(mut self, timeout: Duration) -> Limits {
        self.settle_timeout = timeout;
        self
    }

    /// Sets [`Limits::auth_timeout`].
    pub fn auth_timeout(mut self, timeout: Duration) -> Limits {
        self.auth_timeout = timeout;
        self
    }
}

/// What the gateway needs: the database, its limits, the connections open
/// per key and those not logged in yet (in this process), and the turns of
/// its subscriptions' fetches.
#[derive(Clone)]
pub struct GatewayState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    limits: Limits,
    connections: Mutex<HashMap<i32, usize>>,
    unauthenticated: AtomicUsize,
    /// Every subscription's fetches take turns here: at most half the
    /// pool's connections wait on refills, so that beats, heartbeats,
    /// settles and publishes always find one.
    fetch_limit: sluice::FetchLimit,
    last_forget: Mutex<Option<Instant>>,
}

impl GatewayState {
    /// The gateway on a pool on Sluice's database, with the default limits.
    pub fn new(pool: PgPool) -> GatewayState {
        GatewayState::with_limits(pool, Limits::default())
    }

    /// The gateway with these limits.
    pub fn with_limits(pool: PgPool, limits: Limits) -> GatewayState {
        let fetch_limit = sluice::FetchLimit::new(pool.options().get_max_connections() as usize / 2);
        GatewayState {
            inner: Arc::new(Inner {
                pool,
                limits,
                connections: Mutex::new(HashMap::new()),
                unauthenticated: AtomicUsize::new(0),
                fetch_limit,
                last_forget: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub(crate) fn fetch_limit(&self) -> &sluice::FetchLimit {
        &self.inner.fetch_limit
    }

    /// Takes one of the places for connections not logged in yet, given
    /// back when the guard drops (at the welcome, or when the connection ends).
    pub(crate) fn unauthenticated(&self) -> Option<Unauthenticated> {
        let limit = self.limits().max_unauthenticated;
        self.inner
            .unauthenticated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < limit).then_some(n + 1))
            .ok()?;
        Some(Unauthenticated { state: self.clone() })
    }

    /// The size above which the WebSocket layer itself refuses a frame:
    /// well above the limit, so that frames over it get a clear error from
    /// the gateway, and bounded, so that no frame takes unbounded memory.
    pub(crate) fn transport_cap(&self) -> usize {
        self.limits().max_frame_bytes.saturating_mul(4).max(64 * 1024)
    }

    /// Takes one of the key's connection slots, given back when the guard drops.
    pub(crate) fn connect(&self, key: i32) -> Option<Slot> {
        let mut open = self.inner.connections.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key).or_default();
        if *count >= self.limits().max_connections_per_key {
            return None;
        }
        *count += 1;
        Some(Slot { state: self.clone(), key })
    }

    /// At most once an hour, in the background: forgets idempotency keys
    /// older than a day.
    pub(crate) fn forget_old_idempotency_keys(&self) {
        {
            let mut last = self.inner.last_forget.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(3600)) {
                return;
            }
            *last = Some(Instant::now());
        }
        let pool = self.pool().clone();
        tokio::spawn(async move {
            loop {
                match sqlx::query(sql::IDEMPOTENCY_FORGET).bind(10_000_i64).execute(&pool).await {
                    Ok(done) if done.rows_affected() == 10_000 => continue,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, "could not forget old idempotency keys");
                        break;
                    }
                }
            }
        });
    }
}

/// One open connection of a key.
pub(crate) struct Slot {
    state: GatewayState,
    key: i32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.state.inner.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A connection not logged in yet.
pub(crate) struct Unauthenticated {
    state: GatewayState,
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.state.inner.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The gateway's route: WebSocket upgrades at [`PATH`].
pub fn router(state: GatewayState) -> Router {
    Router::new().route(PATH, get(upgrade)).with_state(state)
}

async fn upgrade(State(state): State<GatewayState>, upgrade: WebSocketUpgrade) -> Response {
    // Counted from the upgrade: a connection holds its place until its
    // welcome, at most the auth timeout.
    let Some(place) = state.unauthenticated() else {
        let limit = state.limits().max_unauthenticated;
        warn!(limit, "gateway refuses a connection: too many not logged in yet (max_unauthenticated)");
        let message = format!("{limit} connections are logging in already (max_unauthenticated); try again shortly\n");
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], message).into_response();
    };
    let cap = state.transport_cap();
    upgrade
        .protocols([PROTOCOL])
        .max_message_size(cap)
        .max_frame_size(cap)
        .on_upgrade(move |socket| connection::serve(state, socket, place))
}
