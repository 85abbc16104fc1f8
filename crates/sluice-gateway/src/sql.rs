//! Every query the gateway runs, each in a named file under `src/sql/`.

pub(crate) const KEY_ADD: &str = include_str!("sql/key_add.sql");
pub(crate) const KEY_GET: &str = include_str!("sql/key_get.sql");
pub(crate) const KEY_LIST: &str = include_str!("sql/key_list.sql");
pub(crate) const KEY_LOGIN: &str = include_str!("sql/key_login.sql");
pub(crate) const KEY_REVOKE: &str = include_str!("sql/key_revoke.sql");
pub(crate) const CLIENT_CONNECT: &str = include_str!("sql/client_connect.sql");
pub(crate) const CLIENT_BEAT: &str = include_str!("sql/client_beat.sql");
pub(crate) const CLIENT_DISCONNECT: &str = include_str!("sql/client_disconnect.sql");
pub(crate) const STREAM_ID: &str = include_str!("sql/stream_id.sql");
pub(crate) const IDEMPOTENCY_CLAIM: &str = include_str!("sql/idempotency_claim.sql");
pub(crate) const IDEMPOTENCY_EXISTING: &str = include_str!("sql/idempotency_existing.sql");
pub(crate) const IDEMPOTENCY_RECORD: &str = include_str!("sql/idempotency_record.sql");
pub(crate) const IDEMPOTENCY_FORGET: &str = include_str!("sql/idempotency_forget.sql");
