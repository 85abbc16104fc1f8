//! The refill and the ack read what they need, not what a long stream or a
//! pinned xmin horizon keeps (issue 10's pressure tests, issue 11's latency):
//! a long transaction keeps every dead row and old snapshot entry alive.

use std::time::Duration;

use serde_json::json;
use sluice::{create_consumer, create_stream, publish_batch, ConsumerOptions, NewEvent, StreamOptions};
use sqlx::{Connection as _, PgConnection};
use support::TestDb;

fn batch(from: i64, n: i64) -> Vec<NewEvent> {
    (from..from + n).map(|i| NewEvent::new("jobs.run", &json!({ "n": i })).unwrap()).collect()
}

/// A long transaction with a transaction id, left open: the pin.
async fn pin(db: &TestDb) -> PgConnection {
    let mut pin = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id();").execute(&mut pin).await.unwrap();
    pin
}

/// One hungry refill of `limit` tasks for consumer `c`, on a new
/// connection, and the index blocks it read from the events' partitions.
async fn refill(db: &TestDb, limit: i32) -> (i64, i64) {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sluice.fetch_v2(
             (SELECT id FROM sluice.consumers WHERE name = 'c'), gen_random_uuid(), '30 s', $1, 10000, true,
             100000000)
         WHERE event_id IS NOT NULL",
    )
    .bind(limit)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let blocks: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_stat_get_xact_blocks_fetched(i.indexrelid)), 0)::bigint
         FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = 'sluice' AND t.relname LIKE 'events%'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (leased, blocks)
}

/// A transaction that was open at the consumer's position and that the
/// window has passed cannot hold later events. Looking for its events
/// anyway, with the window's progress as a row comparison, read every event
/// after that progress: 167 ms a refill, for no row, with a backlog.
#[tokio::test]
async fn a_refill_past_a_long_transaction_reads_its_window_not_the_backlog_after_it() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    let mut pinned = pin(&db).await;
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    // A refill that gets to the end of its window stores the snapshot it
    // read as the position: the pin is among its transactions in progress.
    publish_batch(&db.pool, "jobs", batch(0, 10)).await.unwrap();
    assert_eq!(refill(&db, 100).await.0, 10);
    // And another stream's events beside them, so that the stream alone
    // is not what the planner narrows the search by.
    create_stream(&db.pool, "other", StreamOptions::default()).await.unwrap();
    for b in 1..=100 {
        publish_batch(&db.pool, "jobs", batch(b * 1_000, 1_000)).await.unwrap();
        publish_batch(&db.pool, "other", batch(b * 1_000, 1_000)).await.unwrap();
    }
    // The first refill opens the window and leases the first 10,000.
    assert_eq!(refill(&db, 10_000).await.0, 10_000);
    // The next continues it, far past the pin's transaction id, with the
    // statistics autovacuum would have gathered by then.
    sqlx::query("ANALYZE sluice.events").execute(&db.pool).await.unwrap();
    let (leased, blocks) = refill(&db, 1).await;
    assert_eq!(leased, 1);
    // One event in the window, one looked up: 33 index blocks here, where
    // reading the events after the window's progress took 108.
    assert!(blocks <= 60, "{blocks} index blocks read for {leased} task");
    sqlx::raw_sql("ROLLBACK").execute(&mut pinned).await.unwrap();
}

/// A new window starts where the position ends. Its scan of the events
/// after the position carried the window's progress, (0, 0) before any, as
/// a row bound beside `txid >= start`; btree started at the row bound and
/// read the stream's index from the beginning of its partition on the
/// first refill of every window (164 index pages for 7 events after 32,000;
/// half of each fetch's time in the latency benchmark).
#[tokio::test]
async fn a_new_window_is_read_from_the_position_not_from_the_start_of_the_stream() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default().start(sluice::Start::Beginning)).await.unwrap();
    for b in 0..30 {
        publish_batch(&db.pool, "jobs", batch(b * 1_000, 1_000)).await.unwrap();
    }
    // Three refills take the backlog and close its window.
    let mut leased = 0;
    for _ in 0..3 {
        leased += refill(&db, 10_000).await.0;
    }
    assert_eq!(leased, 30_000);
    assert_eq!(refill(&db, 10_000).await.0, 0, "the backlog's window is closed");

    publish_batch(&db.pool, "jobs", batch(100_000, 7)).await.unwrap();
    let (leased, blocks) = refill(&db, 100).await;
    assert_eq!(leased, 7);
    // 30 index blocks here (the window's events, the checks, a lookup per
    // leased event); 177 when the scan started at the stream's beginning.
    assert!(blocks <= 80, "{blocks} index blocks read for {leased} tasks");
}

/// The ack looks up each acked task by primary key, whatever the
/// statistics say. Without any (autovacuum off, never analyzed), it was
/// planned as a scan of every task row of the consumer, dead ones included
/// (16 ms for 1,000 acks after 100,000 tasks, growing until the next
/// VACUUM). With statistics that show few running tasks, it was planned on
/// the partial index of running tasks, which fills with dead entries under a
/// pin (every acked task leaves one): a flush of 1,344 acks read 659,493
/// entries (185 ms) during the pressure benchmark's pin.
#[tokio::test]
async fn the_ack_probes_each_task_by_primary_key_with_or_without_statistics() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    // Completed tasks kept: a large table with few running tasks, as the
    // statistics of a table under a pin show it.
    let keep = ConsumerOptions::default().completed_retention(Duration::from_secs(3600));
    create_consumer(&db.pool, "jobs", "c", keep).await.unwrap();
    for b in 0..50 {
        publish_batch(&db.pool, "jobs", batch(b * 1_000, 1_000)).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO sluice.tasks (consumer_id, event_id, event_txid, state, priority, position, attempt,
                                   lease_token, finished_at)
         SELECT c.id, e.id, e.txid, 'completed', 1, e.id, 1, nextval('sluice.lease_token'), now()
         FROM sluice.events e, sluice.consumers c WHERE c.name = 'c' AND e.id % 50 <> 0",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sluice.tasks (consumer_id, event_id, event_txid, state, priority, position, attempt,
                                   worker_id, lease_until, lease_token)
         SELECT c.id, e.id, e.txid, 'running', 1, e.id, 1, gen_random_uuid(), now() + interval '1 minute',
                nextval('sluice.lease_token')
         FROM sluice.events e, sluice.consumers c WHERE c.name = 'c' AND e.id % 50 = 0",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (consumer, ids, tokens) = tasks_of_c(&db, "t.state = 'running'").await;
    assert_eq!(ids.len(), 1_000);
    let (mut conn, args) = prepared_ack(&db, consumer, &ids, &tokens).await;
    for statistics in ["none", "analyzed"] {
        if statistics == "analyzed" {
            sqlx::query("ANALYZE sluice.tasks").execute(&db.pool).await.unwrap();
        }
        assert_reads_the_acked_tasks_only(&mut conn, &args, statistics).await;
        // Estimated at a few units per task, so that the plan stays below
        // jit_above_cost (100,000) for any batch the subscriber flushes: a
        // plan above it is compiled by LLVM on every call.
        let plan: serde_json::Value = sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) EXECUTE ack({args})"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let cost = plan[0]["Plan"]["Total Cost"].as_f64().unwrap();
        assert!(
            cost / (ids.len() as f64) < 20.0,
            "statistics {statistics}: the ack is estimated at {cost} for {} tasks",
            ids.len()
        );
    }
    // And it completes every one of them.
    let acked: Vec<i64> = sqlx::query_scalar(&format!("EXECUTE ack({args})")).fetch_all(&mut conn).await.unwrap();
    assert_eq!(acked.len(), 1_000);
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sluice.tasks WHERE state = 'completed' AND event_id = ANY ($1)")
            .bind(&ids)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(completed, 1_000);
}

/// Consumer c's id, and the event ids and lease tokens of its tasks that
/// match `condition` (on `t`, the tasks), in event order.
async fn tasks_of_c(db: &TestDb, condition: &str) -> (i32, Vec<i64>, Vec<i64>) {
    sqlx::query_as(&format!(
        "SELECT c.id, coalesce(array_agg(t.event_id ORDER BY t.event_id) FILTER (WHERE {condition}), '{{}}'),
                coalesce(array_agg(t.lease_token ORDER BY t.event_id) FILTER (WHERE {condition}), '{{}}')
         FROM sluice.consumers c LEFT JOIN sluice.tasks t ON t.consumer_id = c.id
         WHERE c.name = 'c' GROUP BY c.id"
    ))
    .fetch_one(&db.direct)
    .await
    .unwrap()
}

/// The statement of `sluice.ack_v1` prepared on a new connection with
/// custom plans and JIT off (as the function runs it), and the arguments
/// that ack `ids` with `tokens`.
async fn prepared_ack(db: &TestDb, consumer: i32, ids: &[i64], tokens: &[i64]) -> (PgConnection, String) {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_custom_plan; SET jit = off").execute(&mut conn).await.unwrap();
    let function = include_str!("../migrations/functions/ack_v1.sql");
    let body = function.split_once("RETURN QUERY").and_then(|(_, rest)| rest.split_once(";\nEND;")).unwrap().0;
    let ack = body.replace("p_consumer", "$1").replace("p_events", "$2").replace("p_tokens", "$3");
    sqlx::raw_sql(&format!("PREPARE ack(integer, bigint[], bigint[]) AS {ack}")).execute(&mut conn).await.unwrap();
    let list = |xs: &[i64]| xs.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    (conn, format!("{consumer}, '{{{}}}', '{{{}}}'", list(ids), list(tokens)))
}

/// The prepared ack's plan reads the acked tasks and nothing else: no scan
/// of the running tasks' index, of the table, or of the consumer's range of
/// any index.
async fn assert_reads_the_acked_tasks_only(conn: &mut PgConnection, args: &str, statistics: &str) {
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN EXECUTE ack({args})")).fetch_all(conn).await.unwrap();
    let plan = plan.join("\n");
    assert!(!plan.contains("tasks_lease_idx"), "statistics {statistics}: the running tasks' index:\n{plan}");
    assert!(!plan.contains("Seq Scan on tasks"), "statistics {statistics}: every task read:\n{plan}");
    for line in plan.lines().filter(|l| l.contains("Cond: ((consumer_id =") || l.contains("Cond: (consumer_id =")) {
        assert!(line.contains("event_id"), "statistics {statistics}: the consumer's tasks read: {line}\n{plan}");
    }
}

/// Statistics from before the consumer had tasks: autovacuum analyzed the
/// table early, then the backlog came (or a pin kept it from analyzing
/// since). The planner expects one task of the consumer, and the delete of
/// the acked rows went through the consumer's whole range of the primary
/// key: 1,075,919 entries read to ack 235 tasks (300 ms) after a pin of
/// 120 s in `sluice-bench -s pressure`.
#[tokio::test]
async fn the_ack_completes_by_row_address_with_statistics_from_before_the_backlog() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "other", ConsumerOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    for b in 0..50 {
        publish_batch(&db.pool, "jobs", batch(b * 1_000, 1_000)).await.unwrap();
    }
    let insert = |consumer: &'static str, state: &'static str, filter: &'static str| {
        format!(
            "INSERT INTO sluice.tasks (consumer_id, event_id, event_txid, state, priority, position, attempt,
                                       worker_id, lease_until, lease_token, finished_at)
             SELECT c.id, e.id, e.txid, '{state}', 1, e.id, 1,
                    CASE WHEN '{state}' = 'running' THEN gen_random_uuid() END,
                    CASE WHEN '{state}' = 'running' THEN now() + interval '1 minute' END,
                    nextval('sluice.lease_token'), CASE WHEN '{state}' <> 'running' THEN now() END
             FROM sluice.events e, sluice.consumers c WHERE c.name = '{consumer}' AND {filter}"
        )
    };
    // The statistics: another consumer's dead letters, none of c's tasks.
    sqlx::query(&insert("other", "discarded", "e.id % 10 = 0")).execute(&db.pool).await.unwrap();
    sqlx::query("ANALYZE sluice.tasks").execute(&db.pool).await.unwrap();
    // Then c's backlog, every task running.
    sqlx::query(&insert("c", "running", "true")).execute(&db.pool).await.unwrap();
    let (consumer, ids, tokens) = tasks_of_c(&db, "t.event_id % 50 = 0").await;
    assert_eq!(ids.len(), 1_000);
    let (mut conn, args) = prepared_ack(&db, consumer, &ids, &tokens).await;
    assert_reads_the_acked_tasks_only(&mut conn, &args, "from before the backlog").await;

    // It deletes those 1,000 tasks and no other.
    let acked: Vec<i64> = sqlx::query_scalar(&format!("EXECUTE ack({args})")).fetch_all(&mut conn).await.unwrap();
    assert_eq!(acked.len(), 1_000);
    let left: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE t.event_id = ANY ($1))
         FROM sluice.tasks t JOIN sluice.consumers c ON c.id = t.consumer_id WHERE c.name = 'c'",
    )
    .bind(&ids)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, (49_000, 0));
}

/// On a large tasks table that has never been analyzed (autovacuum off or
/// behind), the planner expects dozens of rows for each probe by primary
/// key: 1,000 acks were estimated over jit_above_cost, and each compiled by
/// LLVM before it ran (the drain fell to 4,000 tasks/s in sluice-bench -s
/// pressure on the shared server). The refill and the ack (functions) turn
/// JIT off for themselves.
#[tokio::test]
async fn without_statistics_a_batch_of_acks_is_estimated_over_the_jit_threshold_and_the_refill_turns_jit_off() {
    let db = TestDb::new().await;
    create_stream(&db.pool, "jobs", StreamOptions::default()).await.unwrap();
    create_consumer(&db.pool, "jobs", "c", ConsumerOptions::default()).await.unwrap();
    let consumer: i32 =
        sqlx::query_scalar("SELECT id FROM sluice.consumers WHERE name = 'c'").fetch_one(&db.direct).await.unwrap();
    // A million acked tasks leave their pages behind (dead rows, no VACUUM),
    // then 1,500 are running.
    sqlx::raw_sql(&format!(
        "INSERT INTO sluice.tasks (consumer_id, event_id, event_txid, state, priority, position, attempt, finished_at)
         SELECT {consumer}, g, '1', 'completed', 1, g, 1, now() FROM generate_series(1, 1000000) g;
         DELETE FROM sluice.tasks;
         INSERT INTO sluice.tasks (consumer_id, event_id, event_txid, state, priority, position, attempt,
                                   worker_id, lease_until)
         SELECT {consumer}, g, '1', 'running', 1, g, 1, gen_random_uuid(), now() + interval '1 minute'
         FROM generate_series(2000001, 2001500) g;"
    ))
    .execute(&db.direct)
    .await
    .unwrap();
    let (_, ids, tokens) = tasks_of_c(&db, "true").await;
    let (mut conn, args) = prepared_ack(&db, consumer, &ids, &tokens).await;
    let plan: serde_json::Value =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) EXECUTE ack({args})")).fetch_one(&mut conn).await.unwrap();
    let cost = plan[0]["Plan"]["Total Cost"].as_f64().unwrap();
    let jit_above: f64 =
        sqlx::query_scalar("SELECT current_setting('jit_above_cost')::float8").fetch_one(&mut conn).await.unwrap();
    // Why the batch needs JIT off: its estimate is over the threshold.
    assert!(
        cost > jit_above,
        "1,500 acks estimated at {cost}, under jit_above_cost {jit_above}: the test shows nothing"
    );

    // The ack and the refill turn JIT off for themselves.
    for function in ["ack_v1", "fetch_v2"] {
        let config: Vec<String> = sqlx::query_scalar("SELECT unnest(proconfig) FROM pg_proc WHERE proname = $1")
            .bind(function)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert!(config.contains(&"jit=off".to_string()), "{function} runs with {config:?}");
    }
}
