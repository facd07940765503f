//! The relay's delivery log kept in PostgreSQL: the same contract as the SQLite log (the
//! shared conformance checks), partitions dropped by retention, one relay per log, and a
//! relay writing to it that is killed with -9 and restarted.

use std::sync::Arc;
use std::time::Duration;

use ferry_relay::config::Ordering;
use ferry_relay::log::{conformance, postgres::Connect, DeliveryLog, NewMessage, Next, Outcome};

use crate::common::servers;

/// A fresh database on the target server for one log, and how to connect to it.
async fn log_database(name: &str) -> (String, Connect) {
    let url = servers()
        .target
        .create_database(name)
        .await
        .expect("create the log's database");
    let config = Arc::new(ferry_connectors::postgres::ConnectionConfig::parse(&url, None).unwrap());
    let connect: Connect = Arc::new(move || {
        let config = config.clone();
        Box::pin(async move {
            let client = ferry_connectors::postgres::connect(&config).await?;
            if std::env::var("FERRY_TEST_EXPLAIN").is_ok() {
                client
                    .batch_execute("LOAD 'auto_explain'; SET auto_explain.log_min_duration = 10; SET auto_explain.log_analyze = on; SET auto_explain.log_nested_statements = on;")
                    .await
                    .unwrap();
            }
            Ok(client)
        })
    });
    (url, connect)
}

async fn fresh_log(name: &str) -> DeliveryLog {
    let (_, connect) = log_database(name).await;
    DeliveryLog::open_postgres(connect, "test-relay", &["orders".to_string()])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_log_keeps_the_same_contract_as_sqlite() {
    conformance::moved_rows_and_table_wide_changes_keep_their_place(fresh_log("log_order").await)
        .await;
    conformance::a_message_queued_again_goes_before_the_later_ones_of_its_key(
        fresh_log("log_requeue").await,
    )
    .await;
    conformance::retention_of_a_parked_message_releases_its_key(fresh_log("log_prune").await).await;
    conformance::key_order_holds_back_only_the_failed_key(fresh_log("log_keys").await).await;
    conformance::a_replay_queues_again_and_stores_new_ones(fresh_log("log_replay").await).await;
    conformance::checkpoints_are_kept_by_name(fresh_log("log_checkpoints").await).await;
    conformance::a_refused_message_is_never_sent(fresh_log("log_refused").await).await;
    conformance::a_retry_recorded_with_the_delivery_before_it_is_not_held(
        fresh_log("log_batch").await,
    )
    .await;
}

fn message(id: &str, key: &str, created_at_ms: i64) -> NewMessage {
    NewMessage {
        id: id.into(),
        route: "orders".into(),
        topic: "public.orders".into(),
        partition: None,
        offset: None,
        position: None,
        key: Some(key.into()),
        payload: b"{}".to_vec(),
        created_at_ms,
        old_key: None,
        barrier: false,
        refused: None,
    }
}

fn delivered(seq: i64, at_ms: i64) -> Outcome {
    Outcome {
        seq,
        attempt: ferry_relay::log::Attempt {
            at_ms,
            http_status: Some(200),
            latency_ms: 1.0,
            error: None,
            response: None,
        },
        next: Next::Delivered,
    }
}

/// The day partitions of the log's delivered bucket of route `orders`, by name.
async fn day_partitions(url: &str) -> Vec<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'ferry_relay_test-relay' AND c.relname ~ '^finished_[0-9]+_[0-9]{8}$'
               AND c.relkind = 'r' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_log_retention_drops_day_partitions_and_one_relay_holds_it() {
    let (url, connect) = log_database("log_partitions").await;
    let routes = ["orders".to_string()];
    let log = DeliveryLog::open_postgres(connect.clone(), "test-relay", &routes)
        .await
        .unwrap();
    // A second relay on the same log is refused while the first one holds it.
    let second = DeliveryLog::open_postgres(connect.clone(), "test-relay", &routes).await;
    assert_eq!(
        second.err().map(|error| error.code()),
        Some("relay.log_in_use")
    );
    let now = ferry_core::calendar::unix_millis_now();
    let day = 86_400_000;
    // Three days of partitions per bucket (today and two ahead), two buckets.
    let before = day_partitions(&url).await;
    assert_eq!(before.len(), 6, "{before:?}");
    log.ingest(
        vec![message("today", "a", now), message("old", "b", now)],
        vec![],
    )
    .await
    .unwrap();
    let due = log.due("orders", Ordering::Key, now, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    // One delivered now (a day partition), one long ago (the default partition).
    log.record(vec![
        delivered(due[0].seq, now),
        delivered(due[1].seq, now - 40 * day),
    ])
    .await
    .unwrap();
    assert_eq!(
        log.prune("orders", "delivered", now - 30 * day)
            .await
            .unwrap(),
        1
    );
    assert!(log.message("old").await.unwrap().is_none());
    assert!(log.message("today").await.unwrap().is_some());
    assert_eq!(day_partitions(&url).await, before, "nothing dropped yet");
    // A cutoff after the end of today: today's partition goes as a whole.
    let removed = log
        .prune("orders", "delivered", now - now.rem_euclid(day) + day)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(log.message("today").await.unwrap().is_none());
    let after = day_partitions(&url).await;
    assert_eq!(after.len(), 5, "{after:?}");
    assert!(before
        .iter()
        .all(|name| after.contains(name) || name.ends_with(&ferry_relay_day(now))));
    drop(log);
    // Once the holder is gone, the log opens again (the lock died with its connection).
    let reopened = wait_for_open(connect, &routes).await;
    assert_eq!(reopened.pending().await.unwrap(), 0);
}

/// `YYYYMMDD` of a time, as the log names its day partitions.
fn ferry_relay_day(ms: i64) -> String {
    let (year, month, day) = ferry_core::calendar::civil_from_days(ms.div_euclid(86_400_000));
    format!("{year:04}{month:02}{day:02}")
}

async fn wait_for_open(connect: Connect, routes: &[String]) -> DeliveryLog {
    ferry_testkit::wait_until("the log to be free", Duration::from_secs(30), || {
        let connect = connect.clone();
        async move {
            DeliveryLog::open_postgres(connect, "test-relay", routes)
                .await
                .ok()
        }
    })
    .await
    .unwrap()
}

/// Where a worker's time goes on a PostgreSQL log: ingest in batches, then take due messages
/// and record them delivered, 16 at a time (`cargo test ... postgres_log_speed -- --ignored
/// --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn postgres_log_speed() {
    let log = fresh_log("log_speed").await;
    let total = 20_000;
    let started = std::time::Instant::now();
    for batch in 0..(total / 1000) {
        let messages = (0..1000)
            .map(|n| {
                let n = batch * 1000 + n;
                message(&format!("m{n}"), &format!("k{}", n % 1000), 1000)
            })
            .collect();
        log.ingest(messages, vec![("source".into(), batch.to_string())])
            .await
            .unwrap();
    }
    eprintln!("ingest: {:?} for {total}", started.elapsed());
    let (mut due_time, mut record_time) = (Duration::ZERO, Duration::ZERO);
    let mut delivered = 0;
    while delivered < total {
        let at = std::time::Instant::now();
        let due = log.due("orders", Ordering::Key, 2000, 16).await.unwrap();
        due_time += at.elapsed();
        assert!(!due.is_empty());
        let at = std::time::Instant::now();
        delivered += due.len();
        log.record(due.iter().map(|m| delivered_outcome(m.seq)).collect())
            .await
            .unwrap();
        record_time += at.elapsed();
    }
    eprintln!("due: {due_time:?}, record: {record_time:?} for {total}");
}

fn delivered_outcome(seq: i64) -> Outcome {
    delivered(seq, ferry_core::calendar::unix_millis_now())
}

/// A relay whose log session ended (a server restart, a killed backend) has lost the log's
/// lock: once another relay took it, the first must hand out nothing more, or both would
/// deliver the same messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_lost_the_log_lock_hands_out_nothing_while_another_holds_it() {
    let (_, connect) = log_database("log_lock_lost").await;
    let routes = ["orders".to_string()];
    let first = DeliveryLog::open_postgres(connect.clone(), "test-relay", &routes)
        .await
        .unwrap();
    let now = ferry_core::calendar::unix_millis_now();
    first
        .ingest(
            vec![message("m1", "a", now), message("m2", "b", now)],
            vec![],
        )
        .await
        .unwrap();
    // The session holding the advisory lock ends.
    let admin = servers().target.connect("log_lock_lost").await.unwrap();
    let ended = crate::common::end_advisory_lock_holders(&admin).await;
    assert_eq!(ended, 1, "one session held the log's lock");
    let second = wait_for_open(connect.clone(), &routes).await;
    let handed = first.due("orders", Ordering::Key, now, 10).await;
    assert_eq!(
        handed.as_ref().err().map(|error| error.code()),
        Some("relay.log_in_use"),
        "the first relay handed out {:?}",
        handed.as_ref().map(|due| due.len())
    );
    assert_eq!(
        second
            .due("orders", Ordering::Key, now, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// A relay killed a moment ago leaves its session to the server, which ends it once it notices
/// the closed connection: a successor taking the log meanwhile waits for that session to end
/// instead of failing with `relay.log_in_use` (the kill -9 test met this now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_a_postgres_log_waits_for_a_predecessor_session_to_end() {
    let (_, connect) = log_database("log_predecessor").await;
    let routes = vec!["orders".to_string()];
    let _predecessor = DeliveryLog::open_postgres(connect.clone(), "test-relay", &routes)
        .await
        .unwrap();
    let admin = servers().target.connect("log_predecessor").await.unwrap();
    let successor = tokio::spawn({
        let (connect, routes) = (connect.clone(), routes.clone());
        async move {
            DeliveryLog::open_postgres(connect, "test-relay", &routes)
                .await
                .map(|_| ())
        }
    });
    // The successor has asked for the lock and been refused at least once.
    crate::common::wait_true(
        &admin,
        "the successor to ask for the log's lock",
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_try_advisory_lock%'
                          AND pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory'))",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(crate::common::end_advisory_lock_holders(&admin).await, 1);
    let taken = successor.await.unwrap();
    assert!(taken.is_ok(), "{:?}", taken.err());
}
