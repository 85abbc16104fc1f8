//! The gateway's client keys: an Ed25519 public key per client, with what
//! it may do. Managed with `sluice gateway key add|list|revoke`.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::sql;

/// A client key as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct GatewayKey {
    /// The key's name, as clients and logs know it.
    pub name: String,
    /// The Ed25519 public key, 32 bytes in standard base64.
    pub public_key: String,
    /// The streams it may publish to.
    pub publish: Vec<String>,
    /// The consumers it may take tasks from, as `stream/consumer`.
    pub consume: Vec<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; a revoked key cannot log in.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key: its name and public key, and what it may do.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    name: String,
    public_key: String,
    publish: Vec<String>,
    consume: Vec<String>,
}

impl NewKey {
    /// A key named `name` (letters, digits, `_` and `-`, as stream names)
    /// for the Ed25519 public key `public_key` (32 bytes in base64), allowed
    /// nothing yet.
    pub fn new(name: impl Into<String>, public_key: impl Into<String>) -> NewKey {
        NewKey { name: name.into(), public_key: public_key.into(), ..NewKey::default() }
    }

    /// It may publish to `stream`.
    pub fn publish(mut self, stream: impl Into<String>) -> NewKey {
        self.publish.push(stream.into());
        self
    }

    /// It may take tasks from `consumer` of `stream`.
    pub fn consume(mut self, stream: &str, consumer: &str) -> NewKey {
        self.consume.push(format!("{stream}/{consumer}"));
        self
    }
}

/// What went wrong managing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A bad name, public key or permission; nothing was stored.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was wrong: `name`, `public key`, `--publish`, `--consume`.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A key of that name exists.
    #[error("gateway key {0:?} exists already")]
    NameTaken(String),
    /// That public key is registered under another name.
    #[error("that public key is registered already, as gateway key {0:?}")]
    PublicKeyTaken(String),
    /// No key of that name.
    #[error("gateway key {0:?} does not exist")]
    NotFound(String),
    /// The key was revoked before.
    #[error("gateway key {0:?} is revoked already")]
    AlreadyRevoked(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    name: String,
    public_key: Vec<u8>,
    publish: Vec<String>,
    consume: Vec<String>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for GatewayKey {
    fn from(r: KeyRow) -> GatewayKey {
        GatewayKey {
            name: r.name,
            public_key: base64::engine::general_purpose::STANDARD.encode(r.public_key),
            publish: r.publish,
            consume: r.consume,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// Base64 in the standard or URL-safe alphabet, padded or not.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines.iter().find_map(|e| e.decode(text.trim()).ok())
}

/// The 32 bytes of an Ed25519 public key given in base64 (standard or
/// URL-safe alphabet, padded or not).
pub fn decode_public_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = decode_base64(text).ok_or_else(|| format!("{:?} is not base64", text.trim()))?;
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("an Ed25519 public key is 32 bytes, this one is {}", bytes.len()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| "not a valid Ed25519 public key".to_string())?;
    Ok(key)
}

/// Registers a key. Its name, public key and permissions are checked
/// first; streams and consumers need not exist yet (a permission names
/// them).
pub async fn add_key(pool: &PgPool, key: NewKey) -> Result<GatewayKey, KeyError> {
    let invalid = |what, reason: String| KeyError::Invalid { what, reason };
    sluice::check_name("gateway key", &key.name).map_err(|e| invalid("name", e.to_string()))?;
    let public_key = decode_public_key(&key.public_key).map_err(|r| invalid("public key", r))?;
    for stream in &key.publish {
        sluice::check_name("stream", stream).map_err(|e| invalid("--publish", e.to_string()))?;
    }
    for pair in &key.consume {
        let Some((stream, consumer)) = pair.split_once('/') else {
            return Err(invalid("--consume", format!("{pair:?} is not STREAM/CONSUMER")));
        };
        sluice::check_name("stream", stream).map_err(|e| invalid("--consume", e.to_string()))?;
        sluice::check_name("consumer", consumer).map_err(|e| invalid("--consume", e.to_string()))?;
    }
    let row: Result<KeyRow, sqlx::Error> = sqlx::query_as(sql::KEY_ADD)
        .bind(&key.name)
        .bind(public_key.as_slice())
        .bind(&key.publish)
        .bind(&key.consume)
        .fetch_one(pool)
        .await;
    match row {
        Ok(row) => Ok(row.into()),
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("gateway_keys_name_key") => {
            Err(KeyError::NameTaken(key.name))
        }
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("gateway_keys_public_key_key") => {
            let holder = login_key(pool, &public_key).await?;
            Err(KeyError::PublicKeyTaken(holder.map(|k| k.name).unwrap_or_default()))
        }
        Err(e) => Err(e.into()),
    }
}

/// A key as a login reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LoginKey {
    pub(crate) id: i32,
    pub(crate) name: String,
    pub(crate) publish: Vec<String>,
    pub(crate) consume: Vec<String>,
    pub(crate) revoked: bool,
}

/// The key registered for a public key, if any.
pub(crate) async fn login_key(pool: &PgPool, public_key: &[u8; 32]) -> Result<Option<LoginKey>, sqlx::Error> {
    sqlx::query_as(sql::KEY_LOGIN).bind(public_key.as_slice()).fetch_optional(pool).await
}

/// Every key, by name, revoked ones included.
pub async fn list_keys(pool: &PgPool) -> Result<Vec<GatewayKey>, KeyError> {
    let rows: Vec<KeyRow> = sqlx::query_as(sql::KEY_LIST).fetch_all(pool).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Revokes a key: it cannot log in any more, and the connections it has
/// open are closed within [`crate::REVOCATION_CHECK`].
pub async fn revoke_key(pool: &PgPool, name: &str) -> Result<GatewayKey, KeyError> {
    let row: Option<KeyRow> = sqlx::query_as(sql::KEY_REVOKE).bind(name).fetch_optional(pool).await?;
    if let Some(row) = row {
        return Ok(row.into());
    }
    let existing: Option<KeyRow> = sqlx::query_as(sql::KEY_GET).bind(name).fetch_optional(pool).await?;
    match existing {
        Some(_) => Err(KeyError::AlreadyRevoked(name.to_string())),
        None => Err(KeyError::NotFound(name.to_string())),
    }
}
