//! The behaviour every store of the delivery log must have, as checks that take a fresh,
//! empty log: run by each store's tests (SQLite in its unit tests, PostgreSQL in the
//! integration tests, which start a server). They panic on the first difference.

#![doc(hidden)]

use super::{Attempt, DeliveryLog, DueMessage, Filter, NewMessage, Next, Outcome};
use crate::config::Ordering;

fn message(id: &str, key: &str) -> NewMessage {
    NewMessage {
        id: id.into(),
        route: "orders".into(),
        topic: "public.orders".into(),
        partition: None,
        offset: None,
        position: Some("postgres:0/1".into()),
        key: Some(key.into()),
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        created_at_ms: 1000,
        old_key: None,
        barrier: false,
        refused: None,
    }
}

/// The ids of `due`, in order.
fn ids(due: &[DueMessage]) -> Vec<&str> {
    due.iter().map(|m| m.id.as_str()).collect()
}

/// An attempt at `at_ms` answered with `status`, and what follows.
fn outcome(seq: i64, at_ms: i64, status: u16, next: Next) -> Outcome {
    Outcome {
        seq,
        attempt: attempt(at_ms, status),
        next,
    }
}

fn attempt(at_ms: i64, status: u16) -> Attempt {
    Attempt {
        at_ms,
        http_status: Some(status),
        latency_ms: 1.0,
        error: None,
        response: None,
    }
}

pub async fn moved_rows_and_table_wide_changes_keep_their_place(log: DeliveryLog) {
    let moved = NewMessage {
        old_key: Some("1".into()),
        ..message("move1to2", "2")
    };
    let truncate = NewMessage {
        barrier: true,
        key: Some("t".into()),
        ..message("truncate", "t")
    };
    log.ingest(
        vec![
            message("insert1", "1"),
            moved,
            message("insert3", "3"),
            truncate,
            message("insert4", "4"),
        ],
        vec![],
    )
    .await
    .unwrap();
    let due = log.due("orders", Ordering::Key, 2000, 10).await.unwrap();
    // The move waits for key 1; the truncate for every pending message before it; insert4
    // for the truncate.
    assert_eq!(ids(&due), ["insert1", "insert3"]);
    // insert1 is retrying (still pending): the same holds.
    log.record(vec![
        outcome(due[0].seq, 2000, 503, Next::RetryAt(9000)),
        outcome(due[1].seq, 2000, 200, Next::Delivered),
    ])
    .await
    .unwrap();
    assert!(log
        .due("orders", Ordering::Key, 3000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        log.next_due_at("orders", 3000).await.unwrap(),
        Some(9000),
        "no busy wait on held-back messages"
    );
    // insert1 is parked: the move still waits (its old key), and so does the truncate,
    // which must follow the move.
    let retried = log.due("orders", Ordering::Key, 9000, 10).await.unwrap();
    assert_eq!(ids(&retried), ["insert1"]);
    log.record(vec![outcome(retried[0].seq, 9000, 400, Next::Failed)])
        .await
        .unwrap();
    assert!(log
        .due("orders", Ordering::Key, 9001, 10)
        .await
        .unwrap()
        .is_empty());
    // Retried and delivered: the move, then the truncate, then insert4.
    log.retry_message("insert1", 9002).await.unwrap();
    let mut order = Vec::new();
    for now in 9003..9010 {
        let due = log.due("orders", Ordering::Key, now, 10).await.unwrap();
        order.extend(ids(&due).into_iter().map(str::to_string));
        log.record(
            due.iter()
                .map(|m| outcome(m.seq, now, 200, Next::Delivered))
                .collect(),
        )
        .await
        .unwrap();
    }
    assert_eq!(order, ["insert1", "move1to2", "truncate", "insert4"]);
}

pub async fn a_message_queued_again_goes_before_the_later_ones_of_its_key(log: DeliveryLog) {
    log.ingest(vec![message("a1", "a"), message("a2", "a")], vec![])
        .await
        .unwrap();
    let due = log.due("orders", Ordering::Key, 2000, 10).await.unwrap();
    log.record(vec![outcome(due[0].seq, 2000, 200, Next::Delivered)])
        .await
        .unwrap();
    let generation = log.requeue_generation();
    // a1 is sent again (an operator's retry): a2 waits for it.
    assert!(log.retry_message("a1", 3000).await.unwrap());
    assert_ne!(log.requeue_generation(), generation);
    let due = log.due("orders", Ordering::Key, 3000, 10).await.unwrap();
    assert_eq!(ids(&due), ["a1"]);
    log.record(vec![outcome(due[0].seq, 3000, 200, Next::Delivered)])
        .await
        .unwrap();
    let due = log.due("orders", Ordering::Key, 3001, 10).await.unwrap();
    assert_eq!(ids(&due), ["a2"]);
    // The same through a filter.
    let all = Filter {
        route: Some("orders".into()),
        ..Filter::default()
    };
    log.record(vec![outcome(due[0].seq, 3001, 200, Next::Delivered)])
        .await
        .unwrap();
    assert_eq!(log.retry(all, 4000).await.unwrap(), 2);
    let due = log.due("orders", Ordering::Key, 4000, 10).await.unwrap();
    assert_eq!(ids(&due), ["a1"]);
}

pub async fn retention_of_a_parked_message_releases_its_key(log: DeliveryLog) {
    log.ingest(vec![message("a1", "a"), message("a2", "a")], vec![])
        .await
        .unwrap();
    let due = log.due("orders", Ordering::Key, 2000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    log.record(vec![outcome(due[0].seq, 2000, 400, Next::Failed)])
        .await
        .unwrap();
    assert!(log
        .due("orders", Ordering::Key, 3000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(log.prune("orders", "failed", 2001).await.unwrap(), 1);
    let due = log.due("orders", Ordering::Key, 3000, 10).await.unwrap();
    assert_eq!(ids(&due), ["a2"]);
}

pub async fn key_order_holds_back_only_the_failed_key(log: DeliveryLog) {
    let messages = vec![message("a1", "a"), message("b1", "b"), message("a2", "a")];
    assert_eq!(
        log.ingest(
            messages.clone(),
            vec![("source".into(), "postgres:0/2".into())]
        )
        .await
        .unwrap(),
        3
    );
    // The same messages again (a replay after a crash) are not stored twice.
    assert_eq!(log.ingest(messages, vec![]).await.unwrap(), 0);
    assert_eq!(
        log.checkpoint("source").await.unwrap().as_deref(),
        Some("postgres:0/2")
    );
    let due = log.due("orders", Ordering::Key, 2000, 10).await.unwrap();
    assert_eq!(ids(&due), ["a1", "b1"]);
    // a1 is parked; b1 delivered: a2 waits behind a1.
    log.record(vec![
        outcome(due[0].seq, 2000, 400, Next::Failed),
        outcome(due[1].seq, 2000, 200, Next::Delivered),
    ])
    .await
    .unwrap();
    assert!(log
        .due("orders", Ordering::Key, 3000, 10)
        .await
        .unwrap()
        .is_empty());
    let none = log.due("orders", Ordering::None, 3000, 10).await.unwrap();
    assert_eq!(ids(&none), ["a2"]);
    // Retrying the failed one puts it first again, with a fresh budget.
    let failed = Filter {
        status: Some("failed".into()),
        ..Filter::default()
    };
    assert_eq!(log.retry(failed.clone(), 3000).await.unwrap(), 1);
    let due = log.due("orders", Ordering::Key, 3000, 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|m| (m.id.as_str(), m.attempts_in_budget))
            .collect::<Vec<_>>(),
        [("a1", 0)]
    );
    let (rows, next) = log.search(Filter::default(), None, 2).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["a2", "b1"]
    );
    let (rows, next) = log.search(Filter::default(), next, 2).await.unwrap();
    assert_eq!((rows.len(), next), (1, None));
    let (message, payload, attempts) = log.message("a1").await.unwrap().unwrap();
    assert_eq!((message.status.as_str(), message.attempts), ("pending", 1));
    assert_eq!(payload, b"{\"id\":\"a1\"}");
    assert_eq!(attempts[0].http_status, Some(400));
    let text = Filter {
        text: Some("\"b1\"".into()),
        ..Filter::default()
    };
    assert_eq!(log.search(text, None, 10).await.unwrap().0.len(), 1);
    // Retention removes finished messages only.
    assert_eq!(log.prune("orders", "delivered", 2001).await.unwrap(), 1);
    assert_eq!(log.pending().await.unwrap(), 2);
}

pub async fn a_replay_queues_again_and_stores_new_ones(log: DeliveryLog) {
    log.ingest(vec![message("r1", "r"), message("r2", "r")], vec![])
        .await
        .unwrap();
    let due = log.due("orders", Ordering::Key, 2000, 10).await.unwrap();
    log.record(vec![outcome(due[0].seq, 2000, 200, Next::Delivered)])
        .await
        .unwrap();
    // r1 delivered, r2 pending: a replay queues r1 again (a fresh budget), leaves r2 as it
    // is and stores r3 anew.
    let queued = log
        .replay(
            vec![message("r1", "r"), message("r2", "r"), message("r3", "s")],
            3000,
        )
        .await
        .unwrap();
    assert_eq!(queued, 2);
    let due = log.due("orders", Ordering::Key, 3000, 10).await.unwrap();
    assert_eq!(ids(&due), ["r1", "r3"]);
    let (message, _, attempts) = log.message("r1").await.unwrap().unwrap();
    assert_eq!((message.status.as_str(), attempts.len()), ("pending", 1));
    assert_eq!(log.pending().await.unwrap(), 3);
    let counts = log.counts().await.unwrap();
    assert_eq!(
        counts
            .iter()
            .map(|count| (count.status.as_str(), count.messages))
            .collect::<Vec<_>>(),
        [("pending", 3)]
    );
}

/// Checkpoints are stored with the messages and read back by name and by prefix.
pub async fn checkpoints_are_kept_by_name(log: DeliveryLog) {
    log.ingest(
        vec![],
        vec![
            ("kafka:a:0".into(), "5".into()),
            ("kafka:a_b:1".into(), "7".into()),
            ("source".into(), "postgres:0/9".into()),
        ],
    )
    .await
    .unwrap();
    log.ingest(vec![], vec![("kafka:a:0".into(), "6".into())])
        .await
        .unwrap();
    assert_eq!(
        log.checkpoint("kafka:a:0").await.unwrap().as_deref(),
        Some("6")
    );
    assert_eq!(log.checkpoint("missing").await.unwrap(), None);
    let mut kafka = log.checkpoints("kafka:").await.unwrap();
    kafka.sort();
    assert_eq!(
        kafka,
        [
            ("kafka:a:0".to_string(), "6".to_string()),
            ("kafka:a_b:1".to_string(), "7".to_string())
        ]
    );
    // `_` and `%` in a prefix are plain characters.
    assert_eq!(log.checkpoints("kafka:a_").await.unwrap().len(), 1);
    let first = NewMessage {
        partition: Some(0),
        offset: Some(41),
        topic: "a".into(),
        ..message("k41", "x")
    };
    let second = NewMessage {
        partition: Some(0),
        offset: Some(42),
        topic: "a".into(),
        ..message("k42", "y")
    };
    log.ingest(vec![first, second], vec![]).await.unwrap();
    assert_eq!(
        log.lowest_pending_offsets(vec![("a".into(), 0), ("a".into(), 1)])
            .await
            .unwrap(),
        [("a".to_string(), 0, 41)]
    );
}

/// A message refused when read is stored as failed and never sent, not even when retried;
/// it holds no key back.
pub async fn a_refused_message_is_never_sent(log: DeliveryLog) {
    let refused = NewMessage {
        refused: Some("not protobuf".into()),
        ..message("bad", "k")
    };
    log.ingest(vec![refused, message("good", "k")], vec![])
        .await
        .unwrap();
    let due = log.due("orders", Ordering::Key, 2000, 10).await.unwrap();
    assert_eq!(ids(&due), ["good"]);
    let failed = Filter {
        status: Some("failed".into()),
        ..Filter::default()
    };
    assert_eq!(log.retry(failed.clone(), 2000).await.unwrap(), 0);
    let (rows, _) = log.search(failed, None, 10).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|row| (row.id.as_str(), row.last_error.as_deref()))
            .collect::<Vec<_>>(),
        [("bad", Some("not protobuf"))]
    );
}

/// A message in flight when an earlier one of its key was queued again, whose retry is
/// recorded together with that earlier one's delivery: it becomes due at its retry time.
pub async fn a_retry_recorded_with_the_delivery_before_it_is_not_held(log: DeliveryLog) {
    log.ingest(vec![message("a1", "a"), message("a2", "a")], vec![])
        .await
        .unwrap();
    let due = log.due("orders", Ordering::Key, 2000, 10).await.unwrap();
    log.record(vec![outcome(due[0].seq, 2000, 200, Next::Delivered)])
        .await
        .unwrap();
    let in_flight = log.due("orders", Ordering::Key, 2001, 10).await.unwrap();
    assert_eq!(in_flight[0].id, "a2");
    // An operator sends a1 again while a2 is in flight.
    assert!(log.retry_message("a1", 2002).await.unwrap());
    let again = log.due("orders", Ordering::Key, 2002, 10).await.unwrap();
    assert_eq!(ids(&again), ["a1"]);
    log.record(vec![
        outcome(again[0].seq, 2003, 200, Next::Delivered),
        outcome(in_flight[0].seq, 2003, 503, Next::RetryAt(5000)),
    ])
    .await
    .unwrap();
    let due = log.due("orders", Ordering::Key, 5000, 10).await.unwrap();
    assert_eq!(ids(&due), ["a2"]);
}
