//! The delivery log in PostgreSQL, for production: one schema per relay
//! (`ferry_relay_NAME`), the same contract as the SQLite log (see [`super`]).
//!
//! Layout, so that retention drops whole partitions instead of deleting rows:
//!
//! ```text
//! messages (PARTITION BY LIST (bucket))
//!   messages_open        bucket 'open': every pending message, whatever its route
//!   finished_N           one bucket per route and outcome (delivered, failed), numbered in
//!                        `buckets`; PARTITION BY RANGE (finished_at)
//!     finished_N_YYYYMMDD   one partition per UTC day, created ahead of time
//!     finished_N_default    anything outside the days created (clock jumps)
//!   messages_other       finished messages of a route the log has no bucket for
//! ```
//!
//! A message's attempts live in its row (`attempt_log`, JSON), so they leave with it. An
//! outcome moves the row from `messages_open` to its bucket (PostgreSQL moves rows between
//! partitions on UPDATE); a retry moves it back. Retention of a route's outcome drops the
//! day partitions that ended before the cutoff and deletes by row only in the default one.
//!
//! One relay per log: the writer connection holds an advisory lock for as long as it lives,
//! and takes it again (or fails with `relay.log_in_use`, after waiting up to [`LOCK_WAIT`] for
//! a predecessor's session to end) whenever it reconnects; every write
//! goes through it. The lock ends with the writer's server session, which may happen before
//! this process notices (a killed backend, a restart): the query that hands messages out for
//! delivery checks that the writer's session still holds it, and when it does not, the writer
//! reconnects and takes it back or fails: a relay that lost the log hands nothing more out.
//! (Messages it handed out just before may still be delivered; the relay that took the log
//! delivers them again, with the same `webhook-id`: at least once.)
//!
//! Deduplication by id looks at pending messages and at those finished in the last
//! [`DEDUPLICATION_WINDOW_MS`]: a source read again after a crash repeats only what came after
//! its checkpoint, which was stored moments before. An id outside the window (a relay stopped
//! for days in the middle of a large transaction) is stored and sent again: at least once,
//! with the same `webhook-id`.

use ferry_core::calendar::unix_millis_now;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ferry_core::{Error, Result};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::{AttemptRow, Count, DueMessage, Filter, MessageRow, NewMessage, Next, Outcome};
use crate::config::Ordering;

/// Opens a connection to the log's database (the binary builds it from the URL, with TLS and
/// the password; it never reaches this module's errors).
pub type Connect =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Client>> + Send>> + Send + Sync>;

/// How far back a finished message still counts as stored for deduplication.
pub const DEDUPLICATION_WINDOW_MS: i64 = 2 * DAY_MS;

const DAY_MS: i64 = 86_400_000;

/// Day partitions created ahead of today.
const DAYS_AHEAD: i64 = 2;

/// How long taking the log waits for a session that holds it to end: a relay killed a moment
/// ago leaves its session to the server, which ends it once it notices the closed connection.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The log; clones share its connections.
#[derive(Clone)]
pub struct PostgresLog {
    inner: Arc<Inner>,
}

struct Inner {
    connect: Connect,
    /// The quoted schema name.
    schema: String,
    /// The schema name as the catalog has it.
    schema_name: String,
    lock_key: i64,
    /// Writes, DDL and the advisory lock.
    writer: Mutex<Option<Session>>,
    /// The route workers' reads.
    dispatcher: Mutex<Option<Session>>,
    /// The control plane's reads.
    reader: Mutex<Option<Session>>,
    /// Bucket number (as the partition key's text) by route and outcome.
    buckets: std::sync::Mutex<HashMap<(String, String), String>>,
    /// Day partitions known to exist.
    days: std::sync::Mutex<HashSet<String>>,
    /// The writer reconnected and could not take the lock back: another relay may hold the
    /// log, so nothing is handed out for delivery until the lock is ours again.
    lock_lost: std::sync::atomic::AtomicBool,
    /// The server process of the writer session that holds the lock (0: none yet). The lock
    /// ends with that session, possibly before the client notices.
    writer_pid: std::sync::atomic::AtomicI32,
}

/// A connection and the statements prepared on it (the hot ones are prepared once: a
/// statement sent as text costs a second round trip each time).
struct Session {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Session {
    fn new(client: Client) -> Session {
        Session {
            client,
            statements: HashMap::new(),
        }
    }

    async fn prepared(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await.map_err(storage_error)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

fn storage_error(error: tokio_postgres::Error) -> Error {
    let detail = match error.as_db_error() {
        Some(database) => format!("{} ({})", database.message(), database.code().code()),
        None => error.to_string(),
    };
    let privilege = error.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE);
    let base = if privilege {
        Error::operator(
            "relay.log_privilege",
            format!("the delivery log (PostgreSQL) failed: {detail}"),
        )
        .with_hint("the log's user needs CREATE on its database (or an existing schema ferry_relay_NAME it owns)")
    } else {
        Error::transient(
            "relay.log",
            format!("the delivery log (PostgreSQL) failed: {detail}"),
        )
        .with_hint("check that the log's server is up and has disk space")
    };
    base
}

/// A stable 64-bit key for the advisory lock of one relay's log (FNV-1a).
fn lock_key(relay: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("ferry relay log {relay}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The UTC day (`YYYYMMDD`) and its start, of a time in milliseconds.
fn day_of(ms: i64) -> (String, i64) {
    let start = ms.div_euclid(DAY_MS) * DAY_MS;
    let date = ferry_core::calendar::civil_from_days(start / DAY_MS);
    (format!("{:04}{:02}{:02}", date.0, date.1, date.2), start)
}

impl PostgresLog {
    /// Opens the log of relay `relay` (creating its schema and tables when missing) with the
    /// buckets of `routes`. Fails with `relay.log_in_use` while another relay holds it.
    pub async fn open(connect: Connect, relay: &str, routes: &[String]) -> Result<PostgresLog> {
        if format!("ferry_relay_{relay}").len() > 63 {
            return Err(Error::operator(
                "relay.log_open",
                format!("the relay name '{relay}' is too long for a PostgreSQL schema name (ferry_relay_NAME, 63 bytes)"),
            )
            .with_hint("give the relay a name of at most 51 bytes"));
        }
        let log = PostgresLog {
            inner: Arc::new(Inner {
                connect,
                schema: quote(&format!("ferry_relay_{relay}")),
                schema_name: format!("ferry_relay_{relay}"),
                lock_key: lock_key(relay),
                writer: Mutex::new(None),
                dispatcher: Mutex::new(None),
                reader: Mutex::new(None),
                buckets: Default::default(),
                days: Default::default(),
                lock_lost: Default::default(),
                writer_pid: Default::default(),
            }),
        };
        let mut writer = log.writer().await?;
        writer
            .batch_execute(&log.schema_sql())
            .await
            .map_err(storage_error)?;
        for route in routes {
            for status in ["delivered", "failed"] {
                let row = writer
                    .query_one(
                        &format!(
                            "WITH added AS (INSERT INTO {s}.buckets (route, status) VALUES ($1, $2)
                                 ON CONFLICT (route, status) DO NOTHING RETURNING number)
                             SELECT number FROM added UNION ALL
                             SELECT number FROM {s}.buckets WHERE route = $1 AND status = $2",
                            s = log.inner.schema
                        ),
                        &[route, &status],
                    )
                    .await
                    .map_err(storage_error)?;
                let number: i32 = row.get(0);
                let table = log.table(&format!("finished_{number}"));
                writer
                    .batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {table} PARTITION OF {s}.messages FOR VALUES IN ('{number}') PARTITION BY RANGE (finished_at);
                         CREATE TABLE IF NOT EXISTS {default} PARTITION OF {table} DEFAULT;",
                        s = log.inner.schema,
                        default = log.table(&format!("finished_{number}_default")),
                    ))
                    .await
                    .map_err(storage_error)?;
                log.lock_buckets()
                    .insert((route.clone(), status.to_string()), number.to_string());
            }
        }
        log.create_days(&mut writer, unix_millis_now()).await?;
        drop(writer);
        Ok(log)
    }

    fn schema_sql(&self) -> String {
        let s = &self.inner.schema;
        format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.checkpoints (name text PRIMARY KEY, position text NOT NULL);
             CREATE TABLE IF NOT EXISTS {s}.buckets (
                 number serial PRIMARY KEY, route text NOT NULL, status text NOT NULL,
                 UNIQUE (route, status));
             CREATE SEQUENCE IF NOT EXISTS {s}.message_seq;
             CREATE TABLE IF NOT EXISTS {s}.messages (
                 seq bigint NOT NULL,
                 id text NOT NULL,
                 route text NOT NULL,
                 topic text NOT NULL,
                 partition_number bigint,
                 offset_number bigint,
                 position text,
                 message_key text,
                 payload bytea NOT NULL,
                 created_at bigint NOT NULL,
                 status text NOT NULL,
                 attempts bigint NOT NULL DEFAULT 0,
                 budget_start bigint NOT NULL DEFAULT 0,
                 next_attempt_at bigint NOT NULL DEFAULT 0,
                 last_http_status bigint,
                 last_error text,
                 first_attempt_at bigint,
                 last_attempt_at bigint,
                 finished_at bigint,
                 undeliverable boolean NOT NULL DEFAULT false,
                 barrier boolean NOT NULL DEFAULT false,
                 old_key text,
                 -- true when no earlier message of the same route, topic and key is
                 -- undelivered (see the SQLite log).
                 front boolean NOT NULL DEFAULT true,
                 attempt_log jsonb NOT NULL DEFAULT '[]',
                 bucket text NOT NULL
             ) PARTITION BY LIST (bucket);
             CREATE TABLE IF NOT EXISTS {s}.messages_open PARTITION OF {s}.messages FOR VALUES IN ('open');
             CREATE TABLE IF NOT EXISTS {s}.messages_other PARTITION OF {s}.messages DEFAULT;
             CREATE INDEX IF NOT EXISTS messages_by_id ON {s}.messages (id);
             CREATE INDEX IF NOT EXISTS messages_by_seq ON {s}.messages (seq);
             CREATE INDEX IF NOT EXISTS messages_undelivered_by_key ON {s}.messages (route, topic, message_key, seq)
                 WHERE status <> 'delivered' AND NOT undeliverable;
             CREATE INDEX IF NOT EXISTS open_fronts ON {s}.messages_open (route, seq) WHERE front;
             CREATE INDEX IF NOT EXISTS open_by_route ON {s}.messages_open (route, seq);
             CREATE INDEX IF NOT EXISTS open_by_next_attempt ON {s}.messages_open (route, next_attempt_at);
             CREATE INDEX IF NOT EXISTS open_by_old_key ON {s}.messages_open (route, topic, old_key, seq)
                 WHERE old_key IS NOT NULL;
             CREATE INDEX IF NOT EXISTS open_barriers ON {s}.messages_open (route, topic, seq) WHERE barrier;
             CREATE INDEX IF NOT EXISTS open_offsets ON {s}.messages_open (topic, partition_number, offset_number)
                 WHERE partition_number IS NOT NULL;"
        )
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{}", self.inner.schema, quote(name))
    }

    fn lock_buckets(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.inner
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bucket (partition key) of `route`'s `status` messages; `other` when it has none.
    fn bucket(&self, route: &str, status: &str) -> String {
        self.lock_buckets()
            .get(&(route.to_string(), status.to_string()))
            .cloned()
            .unwrap_or_else(|| "other".to_string())
    }

    /// Creates the day partitions from the day of `now_ms` to [`DAYS_AHEAD`] days later in
    /// every bucket, skipping those known to exist. A day whose rows already went to the
    /// default partition is left there (retention deletes them by row).
    async fn create_days(&self, writer: &mut Client, now_ms: i64) -> Result<()> {
        let numbers: Vec<String> = self.lock_buckets().values().cloned().collect();
        for number in numbers {
            for ahead in 0..=DAYS_AHEAD {
                let (day, start) = day_of(now_ms + ahead * DAY_MS);
                let name = format!("finished_{number}_{day}");
                if self
                    .inner
                    .days
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .contains(&name)
                {
                    continue;
                }
                let created = writer
                    .batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({start}) TO ({})",
                        self.table(&name),
                        self.table(&format!("finished_{number}")),
                        start + DAY_MS
                    ))
                    .await;
                match created {
                    Ok(()) => {}
                    Err(error)
                        if error.code()
                            == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION) =>
                    {
                        tracing::warn!(partition = %name, "rows of this day are in the default partition already; the day stays there");
                    }
                    Err(error) => return Err(storage_error(error)),
                }
                self.inner
                    .days
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(name);
            }
        }
        Ok(())
    }

    /// The writer connection, (re)connected and holding the log's advisory lock.
    async fn writer(&self) -> Result<MappedMutexGuard<'_, Session>> {
        let mut slot = self.inner.writer.lock().await;
        if slot.as_ref().is_none_or(|client| client.is_closed()) {
            *slot = None;
            let client = (self.inner.connect)().await?;
            let deadline = tokio::time::Instant::now() + LOCK_WAIT;
            let row = loop {
                let row = client
                    .query_one(
                        "SELECT pg_try_advisory_lock($1), pg_backend_pid()",
                        &[&self.inner.lock_key],
                    )
                    .await
                    .map_err(storage_error)?;
                if row.get::<_, bool>(0) || tokio::time::Instant::now() >= deadline {
                    break row;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            let locked: bool = row.get(0);
            self.inner
                .writer_pid
                .store(row.get(1), std::sync::atomic::Ordering::SeqCst);
            self.inner
                .lock_lost
                .store(!locked, std::sync::atomic::Ordering::SeqCst);
            if !locked {
                return Err(Error::operator(
                    "relay.log_in_use",
                    format!(
                        "the delivery log {} is in use by another relay",
                        self.inner.schema
                    ),
                )
                .with_hint(
                    "run one relay per log: stop the other one, or give this one another name",
                ));
            }
            *slot = Some(Session::new(client));
        }
        Self::connected(slot)
    }

    /// The connection in `slot`, (re)connected, with `settings` (SQL) run on a new one.
    async fn session<'a>(
        &self,
        slot: &'a Mutex<Option<Session>>,
        settings: &str,
    ) -> Result<MappedMutexGuard<'a, Session>> {
        let mut slot = slot.lock().await;
        if slot.as_ref().is_none_or(|client| client.is_closed()) {
            let client = (self.inner.connect)().await?;
            if !settings.is_empty() {
                client
                    .batch_execute(settings)
                    .await
                    .map_err(storage_error)?;
            }
            *slot = Some(Session::new(client));
        }
        Self::connected(slot)
    }

    fn connected(slot: MutexGuard<'_, Option<Session>>) -> Result<MappedMutexGuard<'_, Session>> {
        MutexGuard::try_map(slot, |client| client.as_mut())
            .map_err(|_| Error::transient("relay.log", "the delivery log's connection was lost"))
    }

    /// The route workers' connection. Its plans walk the open messages in `seq` order (the
    /// front index) whatever the statistics say: a queue table's statistics are stale most
    /// of the time, and a plan that sorts every pending message to return the first few
    /// costs a full scan per call.
    async fn dispatcher(&self) -> Result<MappedMutexGuard<'_, Session>> {
        self.session(
            &self.inner.dispatcher,
            "SET enable_sort = off; SET enable_bitmapscan = off;",
        )
        .await
    }

    async fn reader(&self) -> Result<MappedMutexGuard<'_, Session>> {
        self.session(&self.inner.reader, "").await
    }

    /// See [`super::DeliveryLog::checkpoint`].
    pub async fn checkpoint(&self, name: &str) -> Result<Option<String>> {
        let writer = self.writer().await?;
        let row = writer
            .query_opt(
                &format!(
                    "SELECT position FROM {}.checkpoints WHERE name = $1",
                    self.inner.schema
                ),
                &[&name],
            )
            .await
            .map_err(storage_error)?;
        Ok(row.map(|row| row.get(0)))
    }

    /// See [`super::DeliveryLog::checkpoints`].
    pub async fn checkpoints(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let writer = self.writer().await?;
        let rows = writer
            .query(
                &format!(
                    "SELECT name, position FROM {}.checkpoints WHERE starts_with(name, $1)",
                    self.inner.schema
                ),
                &[&prefix],
            )
            .await
            .map_err(storage_error)?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// See [`super::DeliveryLog::ingest`].
    pub async fn ingest(
        &self,
        messages: Vec<NewMessage>,
        checkpoints: Vec<(String, String)>,
    ) -> Result<u64> {
        let mut writer = self.writer().await?;
        let transaction = writer.transaction().await.map_err(storage_error)?;
        let inserted = self
            .insert_new(&transaction, messages, None)
            .await
            .map_err(storage_error)?;
        // The last position of each name (one statement cannot update a row twice).
        let latest: BTreeMap<String, String> = checkpoints.into_iter().collect();
        if !latest.is_empty() {
            let (names, positions): (Vec<String>, Vec<String>) = latest.into_iter().unzip();
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {}.checkpoints (name, position) SELECT * FROM unnest($1::text[], $2::text[])
                         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                        self.inner.schema
                    ),
                    &[&names, &positions],
                )
                .await
                .map_err(storage_error)?;
        }
        transaction.commit().await.map_err(storage_error)?;
        Ok(inserted)
    }

    /// Stores the messages whose ids are not in the log (pending, or finished within the
    /// deduplication window) nor earlier in `messages`; returns how many. `queued_at`: a
    /// replay's time (the messages are due then; none is refused).
    async fn insert_new(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        messages: Vec<NewMessage>,
        queued_at: Option<i64>,
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        if messages.is_empty() {
            return Ok(0);
        }
        let s = &self.inner.schema;
        let ids: Vec<&str> = messages.iter().map(|message| message.id.as_str()).collect();
        let window = unix_millis_now() - DEDUPLICATION_WINDOW_MS;
        let stored: HashSet<String> = transaction
            .query(
                &format!(
                    "SELECT id FROM {s}.messages WHERE id = ANY($1) AND (bucket = 'open' OR finished_at >= $2)"
                ),
                &[&ids, &window],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut keys_seen: HashSet<(&str, &str, &str)> = HashSet::new();
        let fresh: Vec<(&NewMessage, bool)> = messages
            .iter()
            .filter(|message| !stored.contains(&message.id) && seen.insert(&message.id))
            .map(|message| {
                // Only the first message of a key in the batch can be its front; the
                // statement below does not see the rows it inserts.
                let first = match (&message.key, &message.refused) {
                    (Some(key), None) => keys_seen.insert((&message.route, &message.topic, key)),
                    _ => true,
                };
                (message, first)
            })
            .collect();
        if fresh.is_empty() {
            return Ok(0);
        }
        let mut seqs: Vec<i64> = transaction
            .query(
                &format!(
                    "SELECT nextval('{}') FROM generate_series(1, $1::bigint)",
                    format!("{s}.message_seq").replace('\'', "''")
                ),
                &[&(fresh.len() as i64)],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        seqs.sort_unstable();
        let column = |value: fn(&NewMessage) -> Option<String>| -> Vec<Option<String>> {
            fresh.iter().map(|(message, _)| value(message)).collect()
        };
        let id = column(|m| Some(m.id.clone()));
        let route = column(|m| Some(m.route.clone()));
        let topic = column(|m| Some(m.topic.clone()));
        let position = column(|m| m.position.clone());
        let key = column(|m| m.key.clone());
        let old_key = column(|m| m.old_key.clone());
        let refused: Vec<Option<String>> = fresh
            .iter()
            .map(|(message, _)| message.refused.clone().filter(|_| queued_at.is_none()))
            .collect();
        let failed_bucket: Vec<String> = fresh
            .iter()
            .map(|(message, _)| self.bucket(&message.route, "failed"))
            .collect();
        let partition: Vec<Option<i64>> = fresh.iter().map(|(m, _)| m.partition).collect();
        let offset: Vec<Option<i64>> = fresh.iter().map(|(m, _)| m.offset).collect();
        let payload: Vec<&[u8]> = fresh.iter().map(|(m, _)| m.payload.as_slice()).collect();
        let created: Vec<i64> = fresh.iter().map(|(m, _)| m.created_at_ms).collect();
        let barrier: Vec<bool> = fresh.iter().map(|(m, _)| m.barrier).collect();
        let first: Vec<bool> = fresh.iter().map(|(_, first)| *first).collect();
        let due_at = queued_at.unwrap_or(0);
        // A refused message is finished when stored (its creation time may be days old, which
        // would put it outside the deduplication window at once).
        let now = unix_millis_now();
        let parameters: [&(dyn ToSql + Sync); 17] = [
            &seqs,
            &id,
            &route,
            &topic,
            &partition,
            &offset,
            &position,
            &key,
            &payload,
            &created,
            &refused,
            &barrier,
            &old_key,
            &first,
            &failed_bucket,
            &due_at,
            &now,
        ];
        let undelivered = undelivered_earlier("n.route", "n.topic", "n.failed_bucket");
        let inserted = transaction
            .execute(
                &format!(
                    "INSERT INTO {s}.messages (seq, id, route, topic, partition_number, offset_number, position, message_key,
                         payload, created_at, status, next_attempt_at, last_error, finished_at, undeliverable, barrier,
                         old_key, front, bucket)
                     SELECT n.seq, n.id, n.route, n.topic, n.partition_number, n.offset_number, n.position, n.message_key,
                         n.payload, n.created_at,
                         CASE WHEN n.refused IS NULL THEN 'pending' ELSE 'failed' END, $16,
                         n.refused, CASE WHEN n.refused IS NOT NULL THEN $17::bigint END, n.refused IS NOT NULL,
                         n.barrier, n.old_key,
                         n.message_key IS NULL OR (n.first AND NOT EXISTS (
                             SELECT 1 FROM {s}.messages earlier
                             WHERE {undelivered} AND earlier.message_key = n.message_key)),
                         CASE WHEN n.refused IS NULL THEN 'open' ELSE n.failed_bucket END
                     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                                 $7::text[], $8::text[], $9::bytea[], $10::bigint[], $11::text[], $12::boolean[],
                                 $13::text[], $14::boolean[], $15::text[])
                         AS n(seq, id, route, topic, partition_number, offset_number, position, message_key,
                              payload, created_at, refused, barrier, old_key, first, failed_bucket)"
                ),
                &parameters,
            )
            .await?;
        Ok(inserted)
    }

    /// See [`super::DeliveryLog::due`].
    pub async fn due(
        &self,
        route: &str,
        ordering: Ordering,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueMessage>> {
        if self
            .inner
            .lock_lost
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Taken back, or `relay.log_in_use` again.
            drop(self.writer().await?);
        }
        let s = &self.inner.schema;
        let failed = self.bucket(route, "failed");
        let undelivered = undelivered_earlier("m.route", "m.topic", "$4");
        // The lock ends with the writer's session (a restart, a killed backend), maybe before
        // this process notices: then another relay may hold the log and deliver from it.
        // Nothing is handed out unless the writer's session still holds the lock (checked in
        // the same statement, once per query).
        // (This log's key only: the same backend number may hold other advisory locks.)
        let lock_key = self.inner.lock_key;
        let held = |parameter: &str| {
            format!(
                "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = {parameter}
                   AND objsubid = 1 AND ((classid::int8 << 32) | objid::int8) = {lock_key})"
            )
        };
        let sql = match ordering {
            // As in the SQLite log: held back by an earlier undelivered message of either
            // key, by an earlier pending table-wide change of the topic, and a table-wide
            // change by any earlier pending message of the topic.
            Ordering::Key => format!(
                "SELECT seq, id, topic, partition_number, offset_number, payload, attempts - budget_start
                 FROM {s}.messages_open m
                 WHERE route = $1 AND status = 'pending' AND front AND next_attempt_at <= $2
                   AND {held}
                   AND (m.old_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM {s}.messages earlier
                       WHERE {undelivered} AND earlier.message_key = m.old_key AND earlier.seq < m.seq))
                   AND (m.message_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM {s}.messages earlier
                       WHERE {undelivered} AND earlier.old_key IS NOT NULL
                         AND earlier.old_key IN (m.message_key, m.old_key) AND earlier.seq < m.seq))
                   AND NOT EXISTS (
                       SELECT 1 FROM {s}.messages_open earlier
                       WHERE earlier.route = m.route AND earlier.topic = m.topic AND earlier.seq < m.seq
                         AND earlier.barrier AND earlier.status = 'pending' AND NOT earlier.undeliverable)
                   AND (NOT m.barrier OR NOT EXISTS (
                       SELECT 1 FROM {s}.messages_open earlier
                       WHERE earlier.route = m.route AND earlier.status = 'pending' AND earlier.seq < m.seq
                         AND earlier.topic = m.topic AND NOT earlier.undeliverable))
                 ORDER BY seq LIMIT $3",
                held = held("$5")
            ),
            Ordering::None => format!(
                "SELECT seq, id, topic, partition_number, offset_number, payload, attempts - budget_start
                 FROM {s}.messages_open
                 WHERE route = $1 AND status = 'pending' AND next_attempt_at <= $2
                   AND {held}
                 ORDER BY seq LIMIT $3",
                held = held("$4")
            ),
        };
        let mut dispatcher = self.dispatcher().await?;
        let writer_pid = self
            .inner
            .writer_pid
            .load(std::sync::atomic::Ordering::SeqCst);
        let statement = dispatcher.prepared(&sql).await?;
        let limit = limit as i64;
        let rows = match ordering {
            Ordering::Key => {
                dispatcher
                    .query(&statement, &[&route, &now_ms, &limit, &failed, &writer_pid])
                    .await
            }
            Ordering::None => {
                dispatcher
                    .query(&statement, &[&route, &now_ms, &limit, &writer_pid])
                    .await
            }
        }
        .map_err(storage_error)?;
        if rows.is_empty() {
            // Nothing due, or the lock is gone: which one?
            let holds = dispatcher
                .prepared(&format!("SELECT {}", held("$1")))
                .await?;
            let still_held: bool = dispatcher
                .query_one(&holds, &[&writer_pid])
                .await
                .map_err(storage_error)?
                .get(0);
            if !still_held {
                drop(dispatcher);
                let mut slot = self.inner.writer.lock().await;
                // Unless another task reconnected meanwhile (a new session, a new number): that
                // session holds the lock, or failed to take it and said so.
                if self
                    .inner
                    .writer_pid
                    .load(std::sync::atomic::Ordering::SeqCst)
                    == writer_pid
                {
                    self.inner
                        .lock_lost
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    // A new session takes the lock back, or says the log is in use.
                    *slot = None;
                    drop(slot);
                    drop(self.writer().await?);
                }
            }
            return Ok(Vec::new());
        }
        Ok(rows
            .iter()
            .map(|row| DueMessage {
                seq: row.get(0),
                id: row.get(1),
                topic: row.get(2),
                partition: row.get(3),
                offset: row.get(4),
                payload: row.get(5),
                attempts_in_budget: row.get::<_, i64>(6).max(0) as u32,
            })
            .collect())
    }

    /// See [`super::DeliveryLog::next_due_at`].
    pub async fn next_due_at(&self, route: &str, now_ms: i64) -> Result<Option<i64>> {
        let mut dispatcher = self.dispatcher().await?;
        let statement = dispatcher
            .prepared(&format!(
                "SELECT min(next_attempt_at) FROM {}.messages_open WHERE route = $1 AND status = 'pending' AND next_attempt_at > $2",
                self.inner.schema
            ))
            .await?;
        let row = dispatcher
            .query_one(&statement, &[&route, &now_ms])
            .await
            .map_err(storage_error)?;
        Ok(row.get(0))
    }

    /// See [`super::DeliveryLog::record`].
    pub async fn record(&self, outcomes: Vec<Outcome>) -> Result<()> {
        let s = &self.inner.schema;
        let seq: Vec<i64> = outcomes.iter().map(|o| o.seq).collect();
        let status: Vec<&str> = outcomes
            .iter()
            .map(|o| match o.next {
                Next::Delivered => "delivered",
                Next::RetryAt(_) => "pending",
                Next::Failed => "failed",
            })
            .collect();
        let next_at: Vec<i64> = outcomes
            .iter()
            .map(|o| match o.next {
                Next::RetryAt(when) => when,
                _ => o.attempt.at_ms,
            })
            .collect();
        let finished: Vec<Option<i64>> = outcomes
            .iter()
            .map(|o| match o.next {
                Next::RetryAt(_) => None,
                _ => Some(o.attempt.at_ms),
            })
            .collect();
        let at: Vec<i64> = outcomes.iter().map(|o| o.attempt.at_ms).collect();
        let http_status: Vec<Option<i64>> = outcomes
            .iter()
            .map(|o| o.attempt.http_status.map(i64::from))
            .collect();
        let latency: Vec<f64> = outcomes.iter().map(|o| o.attempt.latency_ms).collect();
        let error: Vec<Option<&str>> = outcomes
            .iter()
            .map(|o| o.attempt.error.as_deref())
            .collect();
        let response: Vec<Option<&str>> = outcomes
            .iter()
            .map(|o| o.attempt.response.as_deref())
            .collect();
        // One statement (atomic without a transaction): the outcomes, then, after a
        // delivery, the next undelivered message of the key becomes its front. The second
        // part reads the rows as they were before the first changed them, so the messages
        // just delivered are left out by their seq.
        let undelivered_before_m =
            undelivered_earlier("m.route", "m.topic", &failed_bucket_of(s, "m.route"));
        let undelivered_of_d =
            undelivered_earlier("d.route", "d.topic", &failed_bucket_of(s, "d.route"));
        let sql = format!(
            "WITH u AS (
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                                      $7::float8[], $8::text[], $9::text[])
                     AS u(seq, status, next_at, finished, at, http_status, latency, error, response)),
             updated AS (
                 UPDATE {s}.messages m SET attempts = m.attempts + 1, status = u.status, next_attempt_at = u.next_at,
                     last_http_status = u.http_status, last_error = u.error,
                     first_attempt_at = coalesce(m.first_attempt_at, u.at), last_attempt_at = u.at,
                     finished_at = u.finished,
                     -- A message that stays pending is its key's front when nothing before it
                     -- is undelivered once this statement is done (an earlier message of its
                     -- key may be delivered by it: the promotion below skips rows changed here).
                     front = CASE WHEN u.status = 'pending' AND m.message_key IS NOT NULL THEN NOT EXISTS (
                         SELECT 1 FROM {s}.messages earlier
                         WHERE {undelivered_before_m}
                           AND earlier.message_key = m.message_key AND earlier.seq < m.seq
                           AND earlier.seq NOT IN (SELECT x.seq FROM u x WHERE x.status = 'delivered'))
                         ELSE m.front END,
                     attempt_log = m.attempt_log || jsonb_build_array(jsonb_build_object(
                         'number', m.attempts + 1, 'at', u.at, 'http_status', u.http_status,
                         'latency_ms', u.latency, 'error', u.error, 'response', u.response)),
                     bucket = CASE WHEN u.status = 'pending' THEN 'open' ELSE coalesce(
                         (SELECT b.number::text FROM {s}.buckets b WHERE b.route = m.route AND b.status = u.status),
                         'other') END
                 FROM u
                 WHERE m.bucket = 'open' AND m.seq = ANY($1) AND m.seq = u.seq AND m.status = 'pending'
                 RETURNING m.seq, m.route, m.topic, m.message_key, u.status),
             delivered AS (SELECT * FROM updated WHERE status = 'delivered')
             UPDATE {s}.messages_open SET front = true WHERE seq = ANY(ARRAY(
                 SELECT (SELECT min(earlier.seq) FROM {s}.messages earlier
                         WHERE {undelivered_of_d}
                           AND earlier.message_key = d.message_key
                           AND earlier.seq <> ALL (ARRAY(SELECT seq FROM delivered)))
                 FROM delivered d WHERE d.message_key IS NOT NULL))"
        );
        let mut writer = self.writer().await?;
        let statement = writer.prepared(&sql).await?;
        let parameters: [&(dyn ToSql + Sync); 9] = [
            &seq,
            &status,
            &next_at,
            &finished,
            &at,
            &http_status,
            &latency,
            &error,
            &response,
        ];
        writer
            .execute(&statement, &parameters)
            .await
            .map_err(storage_error)?;
        Ok(())
    }

    /// See [`super::DeliveryLog::retry`].
    pub async fn retry(&self, filter: Filter, now_ms: i64) -> Result<u64> {
        let s = &self.inner.schema;
        let (condition, mut values) = where_clause(&filter);
        let mut writer = self.writer().await?;
        let transaction = writer.transaction().await.map_err(storage_error)?;
        start_requeue(&transaction).await.map_err(storage_error)?;
        let references: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect();
        transaction
            .execute(
                &format!(
                    "INSERT INTO pg_temp.requeued_keys SELECT DISTINCT route, topic, message_key FROM {s}.messages
                     WHERE status <> 'pending' AND NOT undeliverable AND message_key IS NOT NULL AND {condition}"
                ),
                &references,
            )
            .await
            .map_err(storage_error)?;
        values.push(Box::new(now_ms));
        let references: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let changed = transaction
            .execute(
                &format!(
                    "UPDATE {s}.messages SET status = 'pending', budget_start = attempts, next_attempt_at = ${},
                         finished_at = NULL, front = true, bucket = 'open'
                     WHERE status <> 'pending' AND NOT undeliverable AND {condition}",
                    values.len()
                ),
                &references,
            )
            .await
            .map_err(storage_error)?;
        self.refresh_fronts(&transaction, None)
            .await
            .map_err(storage_error)?;
        transaction.commit().await.map_err(storage_error)?;
        Ok(changed)
    }

    /// After messages were queued again (their keys in `requeued_keys`) or a route's parked
    /// messages left the log (`route`): which pending message of each key is its front.
    async fn refresh_fronts(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        route: Option<&str>,
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let s = &self.inner.schema;
        let which = match route {
            None => {
                "EXISTS (SELECT 1 FROM pg_temp.requeued_keys requeued
                     WHERE requeued.route = m.route AND requeued.topic = m.topic
                       AND requeued.message_key = m.message_key)"
            }
            Some(_) => "m.route = $1 AND NOT m.front",
        };
        let undelivered =
            undelivered_earlier("m.route", "m.topic", &failed_bucket_of(s, "m.route"));
        let sql = format!(
            "UPDATE {s}.messages_open m SET front = NOT EXISTS (
                 SELECT 1 FROM {s}.messages earlier
                 WHERE {undelivered} AND earlier.message_key = m.message_key AND earlier.seq < m.seq)
             WHERE m.status = 'pending' AND m.message_key IS NOT NULL AND {which}"
        );
        match route {
            None => transaction.execute(&sql, &[]).await,
            Some(route) => transaction.execute(&sql, &[&route]).await,
        }
    }

    /// See [`super::DeliveryLog::replay`].
    pub async fn replay(&self, messages: Vec<NewMessage>, now_ms: i64) -> Result<u64> {
        let s = &self.inner.schema;
        // A record that cannot be sent stays as it was logged.
        let messages: Vec<NewMessage> = messages
            .into_iter()
            .filter(|message| message.refused.is_none())
            .collect();
        let mut writer = self.writer().await?;
        let transaction = writer.transaction().await.map_err(storage_error)?;
        start_requeue(&transaction).await.map_err(storage_error)?;
        let keyed: Vec<&NewMessage> = messages.iter().filter(|m| m.key.is_some()).collect();
        let routes: Vec<&str> = keyed.iter().map(|m| m.route.as_str()).collect();
        let topics: Vec<&str> = keyed.iter().map(|m| m.topic.as_str()).collect();
        let keys: Vec<Option<&str>> = keyed.iter().map(|m| m.key.as_deref()).collect();
        transaction
            .execute(
                "INSERT INTO pg_temp.requeued_keys SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
                &[&routes, &topics, &keys],
            )
            .await
            .map_err(storage_error)?;
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        let known: HashSet<String> = transaction
            .query(
                &format!("SELECT id FROM {s}.messages WHERE id = ANY($1)"),
                &[&ids],
            )
            .await
            .map_err(storage_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let (again, new): (Vec<NewMessage>, Vec<NewMessage>) = messages
            .into_iter()
            .partition(|message| known.contains(&message.id));
        let again_ids: Vec<&str> = again.iter().map(|m| m.id.as_str()).collect();
        let again_payloads: Vec<&[u8]> = again.iter().map(|m| m.payload.as_slice()).collect();
        let queued = transaction
            .execute(
                &format!(
                    "UPDATE {s}.messages m SET status = 'pending', budget_start = m.attempts, next_attempt_at = $3,
                         finished_at = NULL, front = true, payload = r.payload, undeliverable = false,
                         last_error = NULL, bucket = 'open'
                     FROM unnest($1::text[], $2::bytea[]) AS r(id, payload)
                     WHERE m.id = r.id AND m.status <> 'pending'"
                ),
                &[&again_ids, &again_payloads, &now_ms],
            )
            .await
            .map_err(storage_error)?;
        let stored = self
            .insert_new(&transaction, new, Some(now_ms))
            .await
            .map_err(storage_error)?;
        self.refresh_fronts(&transaction, None)
            .await
            .map_err(storage_error)?;
        transaction.commit().await.map_err(storage_error)?;
        Ok(queued + stored)
    }

    /// See [`super::DeliveryLog::lowest_pending_offsets`].
    pub async fn lowest_pending_offsets(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, i64)>> {
        let topics: Vec<&str> = partitions.iter().map(|(topic, _)| topic.as_str()).collect();
        let numbers: Vec<i64> = partitions
            .iter()
            .map(|(_, number)| i64::from(*number))
            .collect();
        let reader = self.reader().await?;
        let rows = reader
            .query(
                &format!(
                    "SELECT p.topic, p.number, (SELECT min(offset_number) FROM {}.messages_open
                         WHERE status = 'pending' AND topic = p.topic AND partition_number = p.number)
                     FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS p(topic, number, place)
                     ORDER BY p.place",
                    self.inner.schema
                ),
                &[&topics, &numbers],
            )
            .await
            .map_err(storage_error)?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let offset: Option<i64> = row.get(2);
                Some((row.get(0), row.get::<_, i64>(1) as i32, offset?))
            })
            .collect())
    }

    /// See [`super::DeliveryLog::search`].
    pub async fn search(
        &self,
        filter: Filter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, Option<i64>)> {
        let (condition, mut values) = where_clause(&filter);
        let mut sql = format!(
            "SELECT {ROW_COLUMNS} FROM {}.messages WHERE {condition}",
            self.inner.schema
        );
        if let Some(before) = before {
            values.push(Box::new(before));
            sql.push_str(&format!(" AND seq < ${}", values.len()));
        }
        values.push(Box::new(limit as i64 + 1));
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", values.len()));
        let references: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let reader = self.reader().await?;
        let mut rows: Vec<MessageRow> = reader
            .query(&sql, &references)
            .await
            .map_err(storage_error)?
            .iter()
            .map(message_row)
            .collect();
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|row| row.seq)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// See [`super::DeliveryLog::message`].
    pub async fn message(
        &self,
        id: &str,
    ) -> Result<Option<(MessageRow, Vec<u8>, Vec<AttemptRow>)>> {
        let s = &self.inner.schema;
        let reader = self.reader().await?;
        let Some(row) = reader
            .query_opt(
                &format!(
                    "SELECT {ROW_COLUMNS}, payload FROM {s}.messages WHERE id = $1 ORDER BY seq DESC LIMIT 1"
                ),
                &[&id],
            )
            .await
            .map_err(storage_error)?
        else {
            return Ok(None);
        };
        let message = message_row(&row);
        let payload: Vec<u8> = row.get(16);
        let attempts = reader
            .query(
                &format!(
                    "SELECT a.number, a.at, a.http_status, a.latency_ms, a.error, a.response
                     FROM {s}.messages m, jsonb_to_recordset(m.attempt_log)
                         AS a(number bigint, at bigint, http_status bigint, latency_ms float8, error text, response text)
                     WHERE m.id = $1 AND m.seq = $2 ORDER BY a.number"
                ),
                &[&id, &message.seq],
            )
            .await
            .map_err(storage_error)?
            .iter()
            .map(|found| AttemptRow {
                number: found.get(0),
                at: found.get(1),
                http_status: found.get(2),
                latency_ms: found.get(3),
                error: found.get(4),
                response: found.get(5),
            })
            .collect();
        Ok(Some((message, payload, attempts)))
    }

    /// See [`super::DeliveryLog::counts`].
    pub async fn counts(&self) -> Result<Vec<Count>> {
        let reader = self.reader().await?;
        let rows = reader
            .query(
                &format!(
                    "SELECT route, status, count(*) FROM {}.messages GROUP BY route, status ORDER BY route, status",
                    self.inner.schema
                ),
                &[],
            )
            .await
            .map_err(storage_error)?;
        Ok(rows
            .iter()
            .map(|row| Count {
                route: row.get(0),
                status: row.get(1),
                messages: row.get(2),
            })
            .collect())
    }

    /// See [`super::DeliveryLog::pending`].
    pub async fn pending(&self) -> Result<u64> {
        let reader = self.reader().await?;
        let row = reader
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.messages_open WHERE status = 'pending'",
                    self.inner.schema
                ),
                &[],
            )
            .await
            .map_err(storage_error)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// See [`super::DeliveryLog::prune`]: drops the bucket's day partitions that ended by
    /// `before_ms`, deletes by row in its default partition, and creates the coming days.
    pub async fn prune(&self, route: &str, status: &'static str, before_ms: i64) -> Result<u64> {
        let Some(number) = self
            .lock_buckets()
            .get(&(route.to_string(), status.to_string()))
            .cloned()
        else {
            return Ok(0);
        };
        let mut writer = self.writer().await?;
        self.create_days(&mut writer, unix_millis_now()).await?;
        let parent = format!("finished_{number}");
        let prefix = format!("{parent}_");
        let days: Vec<String> = writer
            .query(
                "SELECT child.relname::text FROM pg_catalog.pg_inherits i
                 JOIN pg_catalog.pg_class child ON child.oid = i.inhrelid
                 JOIN pg_catalog.pg_class parent ON parent.oid = i.inhparent
                 JOIN pg_catalog.pg_namespace n ON n.oid = parent.relnamespace
                 WHERE n.nspname = $1 AND parent.relname = $2",
                &[&self.inner.schema_name, &parent],
            )
            .await
            .map_err(storage_error)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut removed = 0u64;
        let transaction = writer.transaction().await.map_err(storage_error)?;
        for name in days {
            let Some(day) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Some(start) = day_start(day) else {
                continue;
            };
            if start + DAY_MS > before_ms {
                continue;
            }
            let table = self.table(&name);
            let count: i64 = transaction
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .map_err(storage_error)?
                .get(0);
            transaction
                .batch_execute(&format!("DROP TABLE {table}"))
                .await
                .map_err(storage_error)?;
            self.inner
                .days
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&name);
            removed += count as u64;
        }
        removed += transaction
            .execute(
                &format!(
                    "DELETE FROM {} WHERE route = $1 AND status = $2 AND finished_at < $3",
                    self.table(&format!("finished_{number}_default"))
                ),
                &[&route, &status, &before_ms],
            )
            .await
            .map_err(storage_error)?;
        if status == "failed" && removed > 0 {
            // A parked message that leaves the log no longer holds its key back.
            self.refresh_fronts(&transaction, Some(route))
                .await
                .map_err(storage_error)?;
        }
        transaction.commit().await.map_err(storage_error)?;
        Ok(removed)
    }
}

/// The condition that `earlier` (an alias of `messages`) is a message of the route and topic
/// given (SQL expressions) that is not delivered yet: pending, or parked as failed. Only the
/// partitions that can hold one are looked in: `open`, `other`, and `failed_bucket` (an SQL
/// expression, see [`failed_bucket_of`]). The caller adds which key and which `seq`.
fn undelivered_earlier(route: &str, topic: &str, failed_bucket: &str) -> String {
    format!(
        "earlier.bucket IN ('open', 'other', {failed_bucket}) AND earlier.route = {route} AND earlier.topic = {topic}
           AND earlier.status <> 'delivered' AND NOT earlier.undeliverable"
    )
}

/// SQL for the failed bucket of the route in the SQL expression `route` (`other` when the
/// route has none), read from the log's `buckets` in schema `s`.
fn failed_bucket_of(s: &str, route: &str) -> String {
    format!(
        "coalesce((SELECT b.number::text FROM {s}.buckets b WHERE b.route = {route} AND b.status = 'failed'), 'other')"
    )
}

/// The start (ms) of a `YYYYMMDD` day.
fn day_start(day: &str) -> Option<i64> {
    if day.len() != 8 || !day.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i64 = day[..4].parse().ok()?;
    let month: u32 = day[4..6].parse().ok()?;
    let date: u32 = day[6..].parse().ok()?;
    Some(ferry_core::calendar::days_from_civil(year, month, date) * DAY_MS)
}

/// Collects the keys of messages queued again, for [`PostgresLog::refresh_fronts`].
async fn start_requeue(
    transaction: &tokio_postgres::Transaction<'_>,
) -> std::result::Result<(), tokio_postgres::Error> {
    transaction
        .batch_execute(
            "CREATE TEMP TABLE IF NOT EXISTS requeued_keys (route text, topic text, message_key text) ON COMMIT DELETE ROWS;
             DELETE FROM pg_temp.requeued_keys;",
        )
        .await
}

const ROW_COLUMNS: &str = "seq, id, route, topic, partition_number, offset_number, position, message_key, status, attempts, last_http_status, last_error, created_at, first_attempt_at, last_attempt_at, CASE status WHEN 'pending' THEN next_attempt_at END";

fn message_row(row: &Row) -> MessageRow {
    MessageRow {
        seq: row.get(0),
        id: row.get(1),
        route: row.get(2),
        topic: row.get(3),
        partition: row.get(4),
        offset: row.get(5),
        position: row.get(6),
        key: row.get(7),
        status: row.get(8),
        attempts: row.get(9),
        last_http_status: row.get(10),
        last_error: row.get(11),
        created_at: row.get(12),
        first_attempt_at: row.get(13),
        last_attempt_at: row.get(14),
        next_attempt_at: row.get(15),
    }
}

type Values = Vec<Box<dyn ToSql + Sync + Send>>;

/// The SQL condition of a filter and its values (numbered from $1).
fn where_clause(filter: &Filter) -> (String, Values) {
    let (condition, values) = super::filter_condition(
        filter,
        |number| format!("${number}"),
        |text| {
            format!("(position(convert_to({text}, 'UTF8') in payload) > 0 OR strpos(coalesce(last_error, ''), {text}) > 0 OR id = {text})")
        },
    );
    let values = values
        .into_iter()
        .map(|value| -> Box<dyn ToSql + Sync + Send> {
            match value {
                super::FilterValue::Text(text) => Box::new(text),
                super::FilterValue::Integer(number) => Box::new(number),
            }
        })
        .collect();
    (condition, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_named_and_read_back() {
        let (day, start) = day_of(1_780_000_000_000);
        assert_eq!(day_start(&day), Some(start));
        assert!(start <= 1_780_000_000_000 && 1_780_000_000_000 < start + DAY_MS);
        assert_eq!(day_of(0), ("19700101".to_string(), 0));
        assert_eq!(day_start("2026120"), None);
        assert_ne!(lock_key("a"), lock_key("b"));
    }
}
