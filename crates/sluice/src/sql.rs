//! Every query Sluice runs, each in a named file under `src/sql/`.

pub(crate) const ACK: &str = include_str!("sql/ack.sql");
pub(crate) const CONSUMER_CREATE: &str = include_str!("sql/consumer_create.sql");
pub(crate) const CONSUMER_DELETE: &str = include_str!("sql/consumer_delete.sql");
pub(crate) const CONSUMER_GET: &str = include_str!("sql/consumer_get.sql");
pub(crate) const CONSUMER_LIST: &str = include_str!("sql/consumer_list.sql");
pub(crate) const CONSUMER_RESET: &str = include_str!("sql/consumer_reset.sql");
pub(crate) const CONSUMER_LOOKUP: &str = include_str!("sql/consumer_lookup.sql");
pub(crate) const DEFER: &str = include_str!("sql/defer.sql");
pub(crate) const FAIL: &str = include_str!("sql/fail.sql");
pub(crate) const FETCH: &str = include_str!("sql/fetch.sql");
pub(crate) const HEARTBEAT: &str = include_str!("sql/heartbeat.sql");
pub(crate) const MAINTAIN: &str = include_str!("sql/maintain.sql");
pub(crate) const NACK: &str = include_str!("sql/nack.sql");
pub(crate) const PUBLISH: &str = include_str!("sql/publish.sql");
pub(crate) const RELEASE: &str = include_str!("sql/release.sql");
pub(crate) const STREAM_CREATE: &str = include_str!("sql/stream_create.sql");
pub(crate) const STREAM_DELETE: &str = include_str!("sql/stream_delete.sql");
pub(crate) const STREAM_GET: &str = include_str!("sql/stream_get.sql");
pub(crate) const STREAM_LIST: &str = include_str!("sql/stream_list.sql");
pub(crate) const TASK_CANCEL: &str = include_str!("sql/task_cancel.sql");
pub(crate) const TASK_GET: &str = include_str!("sql/task_get.sql");
pub(crate) const TASK_LOG: &str = include_str!("sql/task_log.sql");
pub(crate) const TASK_RETRY: &str = include_str!("sql/task_retry.sql");
pub(crate) const WORKER_REGISTER: &str = include_str!("sql/worker_register.sql");
pub(crate) const WORKER_UNREGISTER: &str = include_str!("sql/worker_unregister.sql");
