//! Every query Sluice runs, each in a named file under `src/sql/`.

pub(crate) const ACK: &str = include_str!("sql/ack.sql");
pub(crate) const CONSUMER_CREATE: &str = include_str!("sql/consumer_create.sql");
pub(crate) const CONSUMER_DELETE: &str = include_str!("sql/consumer_delete.sql");
pub(crate) const CONSUMER_GET: &str = include_str!("sql/consumer_get.sql");
pub(crate) const CONSUMER_LIST: &str = include_str!("sql/consumer_list.sql");
pub(crate) const CONSUMER_LOCK: &str = include_str!("sql/consumer_lock.sql");
pub(crate) const CONSUMER_PENDING: &str = include_str!("sql/consumer_pending.sql");
pub(crate) const CONSUMER_SET_ORDER: &str = include_str!("sql/consumer_set_order.sql");
pub(crate) const CONSUMER_PAUSE: &str = include_str!("sql/consumer_pause.sql");
pub(crate) const CONSUMER_UPDATE: &str = include_str!("sql/consumer_update.sql");
pub(crate) const CONSUMER_RESET: &str = include_str!("sql/consumer_reset.sql");
pub(crate) const CONSUMER_LOOKUP: &str = include_str!("sql/consumer_lookup.sql");
pub(crate) const DEFER: &str = include_str!("sql/defer.sql");
pub(crate) const EVENT_PARTITIONS: &str = include_str!("sql/event_partitions.sql");
pub(crate) const FAIL: &str = include_str!("sql/fail.sql");
pub(crate) const FETCH: &str = include_str!("sql/fetch.sql");
pub(crate) const HEARTBEAT: &str = include_str!("sql/heartbeat.sql");
pub(crate) const MAINTAIN: &str = include_str!("sql/maintain.sql");
pub(crate) const NACK: &str = include_str!("sql/nack.sql");
pub(crate) const PUBLISH: &str = include_str!("sql/publish.sql");
pub(crate) const RELEASE: &str = include_str!("sql/release.sql");
pub(crate) const STORAGE_STATS: &str = include_str!("sql/storage_stats.sql");
pub(crate) const STREAM_CREATE: &str = include_str!("sql/stream_create.sql");
pub(crate) const STREAM_DELETE: &str = include_str!("sql/stream_delete.sql");
pub(crate) const STREAM_GET: &str = include_str!("sql/stream_get.sql");
pub(crate) const STREAM_UPDATE: &str = include_str!("sql/stream_update.sql");
pub(crate) const STREAM_LIST: &str = include_str!("sql/stream_list.sql");
pub(crate) const STREAM_IDS: &str = include_str!("sql/stream_ids.sql");
/// The bulk statements on tasks share the filter that selects them.
macro_rules! on_filtered_tasks {
    ($file:literal) => {
        concat!(include_str!("sql/task_filter.sql"), include_str!($file))
    };
}
pub(crate) const TASK_COUNT: &str = on_filtered_tasks!("sql/task_count.sql");
pub(crate) const TASK_LIST: &str = on_filtered_tasks!("sql/task_list.sql");
pub(crate) const TASK_RETRY: &str = on_filtered_tasks!("sql/task_retry.sql");
pub(crate) const TASK_SET_ASIDE: &str = on_filtered_tasks!("sql/task_set_aside.sql");
pub(crate) const CLEANUP_PREVIEW: &str = include_str!("sql/cleanup_preview.sql");
pub(crate) const CONSUMER_IDS: &str = include_str!("sql/consumer_ids.sql");
pub(crate) const EVENT_PARTITIONS_DUE: &str = include_str!("sql/event_partitions_due.sql");
pub(crate) const EVENT_PARTITIONS_LIST: &str = include_str!("sql/event_partitions_list.sql");
pub(crate) const EVENT_PARTITIONS_PENDING: &str = include_str!("sql/event_partitions_pending.sql");
pub(crate) const EVENT_PARTITIONING_GET: &str = include_str!("sql/event_partitioning_get.sql");
pub(crate) const EVENT_PARTITIONING_SET: &str = include_str!("sql/event_partitioning_set.sql");
pub(crate) const CONSUMER_STATS: &str = include_str!("sql/consumer_stats.sql");
pub(crate) const STATS_SETTINGS: &str = include_str!("sql/stats_settings.sql");
pub(crate) const THROUGHPUT: &str = include_str!("sql/throughput.sql");
pub(crate) const GATEWAY_CLIENT_LIST: &str = include_str!("sql/gateway_client_list.sql");
pub(crate) const XMIN_HORIZON: &str = include_str!("sql/xmin_horizon.sql");
pub(crate) const WORKER_LIST: &str = include_str!("sql/worker_list.sql");
pub(crate) const TASK_EVENT: &str = include_str!("sql/task_event.sql");
pub(crate) const TASK_GET: &str = include_str!("sql/task_get.sql");
pub(crate) const TASK_LOG: &str = include_str!("sql/task_log.sql");
pub(crate) const WORKER_REGISTER: &str = include_str!("sql/worker_register.sql");
pub(crate) const WORKER_UNREGISTER: &str = include_str!("sql/worker_unregister.sql");
pub(crate) const WORKER_HELD: &str = include_str!("sql/worker_held.sql");
