//! The delivery log: every message the relay took, every attempt to deliver it and its
//! outcome, and the source checkpoints. Two stores keep it: one SQLite file ([`sqlite`], the
//! embedded default) or a PostgreSQL schema ([`postgres`], for production: finished messages
//! live in partitions by route, outcome and day, so retention drops whole partitions).
//!
//! Why nothing is lost: a message enters the log in the same transaction as the source
//! position after it ([`DeliveryLog::ingest`]); only then is the source acknowledged. From
//! there a message is `pending` until an attempt succeeds (`delivered`) or its retries are
//! spent or the endpoint refused it (`failed`, parked). A crash at any moment leaves every
//! message either in the log (delivered later, maybe twice: at least once) or before the
//! checkpoint (read again from the source, and deduplicated by its id, which derives from its
//! source coordinates).
//!
//! Ordering: one worker per route takes due messages in arrival order (`seq`); under key
//! ordering a message is due only when no earlier message of the same route, topic and key is
//! undelivered, so a parked failure holds back its key and nothing else. A message that moved
//! a row waits for both its keys; a table-wide change (`barrier`) waits for every earlier
//! pending message of its topic, and every later one waits for it.
//!
//! Both stores follow one contract, checked by the same tests ([`conformance`]).

pub mod conformance;
pub mod postgres;
pub mod sqlite;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use ferry_core::Result;

use crate::config::Ordering;

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// `webhook-id`; a message whose id is already in the log is not stored again.
    pub id: String,
    pub route: String,
    pub topic: String,
    pub partition: Option<i64>,
    pub offset: Option<i64>,
    /// Where in a database's log the change sits (`postgres:0/16B3748#3`).
    pub position: Option<String>,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub created_at_ms: i64,
    /// The old key of a message that moved a row: ordered against both keys.
    pub old_key: Option<String>,
    /// Ordered against every pending message of its route and topic (see
    /// [`crate::document::Document`]).
    pub barrier: bool,
    /// Set for a message that cannot be delivered at all (it could not be decoded): it is
    /// stored as failed with this error.
    pub refused: Option<String>,
}

/// A message due for an attempt.
#[derive(Debug, Clone)]
pub struct DueMessage {
    pub seq: i64,
    pub id: String,
    pub topic: String,
    pub partition: Option<i64>,
    pub offset: Option<i64>,
    pub payload: Vec<u8>,
    /// Attempts since the message was last (re)queued.
    pub attempts_in_budget: u32,
}

/// What one attempt did.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at_ms: i64,
    pub http_status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// Where a message goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Delivered,
    RetryAt(i64),
    Failed,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub seq: i64,
    pub attempt: Attempt,
    pub next: Next,
}

/// Search filters of the control plane (all optional).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub route: Option<String>,
    pub topic: Option<String>,
    pub key: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// A substring of the payload, the last error or the id.
    pub text: Option<String>,
    /// Exactly this message.
    pub id: Option<String>,
}

/// A value of a filter's condition.
pub(crate) enum FilterValue {
    Text(String),
    Integer(i64),
}

/// The SQL condition of `filter` over the messages table and its values, numbered from 1:
/// `placeholder(n)` writes parameter `n` (`?1`, `$1`), `contains(p)` the store's test that
/// the payload, the last error or the id holds the text in parameter `p`.
pub(crate) fn filter_condition(
    filter: &Filter,
    placeholder: fn(usize) -> String,
    contains: fn(&str) -> String,
) -> (String, Vec<FilterValue>) {
    let mut conditions = vec!["1 = 1".to_string()];
    let mut values = Vec::new();
    let equal = [
        ("status", &filter.status),
        ("route", &filter.route),
        ("topic", &filter.topic),
        ("message_key", &filter.key),
        ("id", &filter.id),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            values.push(FilterValue::Text(value.clone()));
            conditions.push(format!("{column} = {}", placeholder(values.len())));
        }
    }
    if let Some(since) = filter.since_ms {
        values.push(FilterValue::Integer(since));
        conditions.push(format!("created_at >= {}", placeholder(values.len())));
    }
    if let Some(until) = filter.until_ms {
        values.push(FilterValue::Integer(until));
        conditions.push(format!("created_at < {}", placeholder(values.len())));
    }
    if let Some(text) = &filter.text {
        values.push(FilterValue::Text(text.clone()));
        conditions.push(contains(&placeholder(values.len())));
    }
    (conditions.join(" AND "), values)
}

/// A message as the control plane shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageRow {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub route: String,
    pub topic: String,
    pub partition: Option<i64>,
    pub offset: Option<i64>,
    pub position: Option<String>,
    pub key: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub last_http_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRow {
    pub number: i64,
    pub at: i64,
    pub http_status: Option<i64>,
    pub latency_ms: f64,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// Messages per route and status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Count {
    pub route: String,
    pub status: String,
    pub messages: i64,
}

/// The log; clones share the store's connections.
#[derive(Clone)]
pub struct DeliveryLog {
    store: Store,
    /// See [`DeliveryLog::requeue_generation`].
    requeued: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Store {
    Sqlite(sqlite::SqliteLog),
    Postgres(postgres::PostgresLog),
}

/// Runs the same call on whichever store the log is.
macro_rules! on_store {
    ($log:expr, $store:ident => $call:expr) => {
        match &$log.store {
            Store::Sqlite($store) => $call,
            Store::Postgres($store) => $call,
        }
    };
}

impl DeliveryLog {
    /// Opens (creating when missing) the SQLite log at `path`.
    pub fn open(path: &Path) -> Result<DeliveryLog> {
        Ok(DeliveryLog::from_store(Store::Sqlite(
            sqlite::SqliteLog::open(path)?,
        )))
    }

    /// Opens (creating when missing) the log in PostgreSQL (see [`postgres::PostgresLog::open`]).
    pub async fn open_postgres(
        connect: postgres::Connect,
        relay: &str,
        routes: &[String],
    ) -> Result<DeliveryLog> {
        let store = postgres::PostgresLog::open(connect, relay, routes).await?;
        Ok(DeliveryLog::from_store(Store::Postgres(store)))
    }

    fn from_store(store: Store) -> DeliveryLog {
        DeliveryLog {
            store,
            requeued: Arc::default(),
        }
    }

    /// The stored source position of `name`.
    pub async fn checkpoint(&self, name: &str) -> Result<Option<String>> {
        on_store!(self, store => store.checkpoint(name).await)
    }

    /// Every checkpoint whose name starts with `prefix`.
    pub async fn checkpoints(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        on_store!(self, store => store.checkpoints(prefix).await)
    }

    /// Stores `messages` (skipping ids already present) and, in the same transaction, the
    /// checkpoints (name, position). Returns how many messages were new.
    pub async fn ingest(
        &self,
        messages: Vec<NewMessage>,
        checkpoints: Vec<(String, String)>,
    ) -> Result<u64> {
        on_store!(self, store => store.ingest(messages, checkpoints).await)
    }

    /// Up to `limit` messages of `route` due at `now_ms`, oldest first (see the module notes
    /// on ordering).
    pub async fn due(
        &self,
        route: &str,
        ordering: Ordering,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueMessage>> {
        on_store!(self, store => store.due(route, ordering, now_ms, limit).await)
    }

    /// When the next retry of `route` is scheduled after `now_ms` (None: none is). Messages
    /// due already but held back by their key wait for an outcome, which wakes the worker.
    pub async fn next_due_at(&self, route: &str, now_ms: i64) -> Result<Option<i64>> {
        on_store!(self, store => store.next_due_at(route, now_ms).await)
    }

    /// Stores the attempts and what follows from them, in one transaction.
    pub async fn record(&self, outcomes: Vec<Outcome>) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        on_store!(self, store => store.record(outcomes).await)
    }

    /// Queues matching messages that are not pending once more, with a fresh retry budget;
    /// returns how many. Messages refused when read (not in the route's format) are never
    /// sent: they stay failed.
    pub async fn retry(&self, filter: Filter, now_ms: i64) -> Result<u64> {
        let retried = on_store!(self, store => store.retry(filter, now_ms).await)?;
        self.requeued.fetch_add(1, AtomicOrdering::SeqCst);
        Ok(retried)
    }

    /// Queues one message again (whatever its state but pending); false when unknown or
    /// already pending.
    pub async fn retry_message(&self, id: &str, now_ms: i64) -> Result<bool> {
        let filter = Filter {
            id: Some(id.to_string()),
            ..Filter::default()
        };
        Ok(self.retry(filter, now_ms).await? > 0)
    }

    /// How many times messages were queued again (retry, replay): a worker drops what it
    /// fetched ahead when this changes, since an earlier message of a key may now go first.
    pub fn requeue_generation(&self) -> u64 {
        self.requeued.load(AtomicOrdering::SeqCst)
    }

    /// Stores messages read again from the source (a replay): those still in the log are
    /// queued again with a fresh retry budget (unless pending), the others are stored anew.
    /// Returns how many were queued.
    pub async fn replay(&self, messages: Vec<NewMessage>, now_ms: i64) -> Result<u64> {
        let queued = on_store!(self, store => store.replay(messages, now_ms).await)?;
        self.requeued.fetch_add(1, AtomicOrdering::SeqCst);
        Ok(queued)
    }

    /// For each of `partitions` (topic, partition), the lowest offset whose message is still
    /// pending in any route, if one is: everything before it has an outcome in the log.
    pub async fn lowest_pending_offsets(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, i64)>> {
        on_store!(self, store => store.lowest_pending_offsets(partitions).await)
    }

    /// Messages matching `filter`, newest first, `limit` at a time after the cursor `before`
    /// (a `seq`); returns them and the cursor of the next page.
    pub async fn search(
        &self,
        filter: Filter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, Option<i64>)> {
        on_store!(self, store => store.search(filter, before, limit).await)
    }

    /// One message with its payload and attempts.
    pub async fn message(
        &self,
        id: &str,
    ) -> Result<Option<(MessageRow, Vec<u8>, Vec<AttemptRow>)>> {
        on_store!(self, store => store.message(id).await)
    }

    /// Messages per route and status.
    pub async fn counts(&self) -> Result<Vec<Count>> {
        on_store!(self, store => store.counts().await)
    }

    /// How many messages wait for delivery in all routes.
    pub async fn pending(&self) -> Result<u64> {
        on_store!(self, store => store.pending().await)
    }

    /// Removes `route`'s messages in `status` (`delivered` or `failed`) finished before
    /// `before_ms`, with their attempts; returns how many. A parked message removed no longer
    /// holds its key back.
    pub async fn prune(&self, route: &str, status: &'static str, before_ms: i64) -> Result<u64> {
        on_store!(self, store => store.prune(route, status, before_ms).await)
    }
}
