//! The delivery log in one SQLite file (WAL, `synchronous=FULL`), the embedded default. See
//! [`super`] for the contract; retention deletes rows in bounded transactions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferry_core::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};

use super::{AttemptRow, Count, DueMessage, Filter, MessageRow, NewMessage, Next, Outcome};
use crate::config::Ordering;

/// The log; clones share the file's connections.
#[derive(Clone)]
pub struct SqliteLog {
    writer: Arc<Mutex<Connection>>,
    /// The route workers' reads (WAL: they never wait for the writer).
    dispatcher: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Held while the log is open: a second relay on the same log would deliver every
    /// message twice.
    _lock: Arc<std::fs::File>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    route TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_number INTEGER,
    offset_number INTEGER,
    position TEXT,
    message_key TEXT,
    payload BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    budget_start INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_http_status INTEGER,
    last_error TEXT,
    first_attempt_at INTEGER,
    last_attempt_at INTEGER,
    finished_at INTEGER,
    undeliverable INTEGER NOT NULL DEFAULT 0,
    barrier INTEGER NOT NULL DEFAULT 0,
    old_key TEXT,
    -- 1 when no earlier message of the same route, topic and key is undelivered: kept up to
    -- date as messages arrive and are delivered, so that finding what may go next never
    -- walks past the messages held back behind their key.
    front INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS messages_by_status ON messages (route, status, seq);
CREATE INDEX IF NOT EXISTS messages_by_key ON messages (route, topic, message_key, seq);
-- The ordering checks look only at messages not yet delivered: partial indexes keep them
-- cheap however long a key's history grows.
CREATE INDEX IF NOT EXISTS messages_open_by_key ON messages (route, topic, message_key, seq)
    WHERE status <> 'delivered' AND undeliverable = 0;
CREATE INDEX IF NOT EXISTS messages_fronts ON messages (route, seq)
    WHERE status = 'pending' AND front = 1;
CREATE INDEX IF NOT EXISTS messages_open_by_old_key ON messages (route, topic, old_key, seq)
    WHERE old_key IS NOT NULL AND status <> 'delivered' AND undeliverable = 0;
CREATE INDEX IF NOT EXISTS messages_open_barriers ON messages (route, topic, seq)
    WHERE barrier = 1 AND status <> 'delivered' AND undeliverable = 0;
CREATE INDEX IF NOT EXISTS messages_finished ON messages (route, status, finished_at);
CREATE INDEX IF NOT EXISTS messages_pending_offsets ON messages (topic, partition_number, offset_number)
    WHERE status = 'pending' AND partition_number IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    message_seq INTEGER NOT NULL,
    number INTEGER NOT NULL,
    at INTEGER NOT NULL,
    http_status INTEGER,
    latency_ms REAL NOT NULL,
    error TEXT,
    response TEXT,
    PRIMARY KEY (message_seq, number)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    position TEXT NOT NULL
);
";

const ROW_COLUMNS: &str = "seq, id, route, topic, partition_number, offset_number, position, message_key, status, attempts, last_http_status, last_error, created_at, first_attempt_at, last_attempt_at, CASE status WHEN 'pending' THEN next_attempt_at END";

fn storage_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::transient(
        "relay.log",
        format!("the delivery log {} failed: {error}", path.display()),
    )
    .with_hint("check the disk the log is on (space, permissions)")
}

fn open_connection(path: &Path) -> Result<Connection> {
    let connection = Connection::open(path).map_err(|error| {
        Error::operator(
            "relay.log_open",
            format!("cannot open the delivery log {}: {error}", path.display()),
        )
        .with_hint("point [log] url at a writable file: sqlite:/var/lib/ferry/relay.db")
    })?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;",
        )
        .map_err(|error| storage_error(path, error))?;
    Ok(connection)
}

impl SqliteLog {
    /// Opens (creating when missing) the log at `path`.
    pub fn open(path: &Path) -> Result<SqliteLog> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|error| {
                Error::operator(
                    "relay.log_open",
                    format!("cannot create {}: {error}", parent.display()),
                )
            })?;
        }
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| {
                Error::operator(
                    "relay.log_open",
                    format!("cannot open {}: {error}", lock_path.display()),
                )
            })?;
        if let Err(error) = lock.try_lock() {
            return Err(Error::operator(
                "relay.log_in_use",
                format!(
                    "the delivery log {} is in use by another relay ({error})",
                    path.display()
                ),
            )
            .with_hint(
                "run one relay per log: stop the other one, or give this one its own [log] url",
            ));
        }
        let writer = open_connection(path)?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|error| storage_error(path, error))?;
        let reader = open_connection(path)?;
        let dispatcher = open_connection(path)?;
        Ok(SqliteLog {
            writer: Arc::new(Mutex::new(writer)),
            dispatcher: Arc::new(Mutex::new(dispatcher)),
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_path_buf(),
            _lock: Arc::new(lock),
        })
    }

    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.on(self.writer.clone(), work).await
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.on(self.reader.clone(), work).await
    }

    async fn dispatch<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.on(self.dispatcher.clone(), work).await
    }

    async fn on<T: Send + 'static>(
        &self,
        connection: Arc<Mutex<Connection>>,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut connection).map_err(|error| storage_error(&path, error))
        })
        .await
        .map_err(|error| storage_error(&self.path, error))?
    }

    /// The stored source position of `name`.
    pub async fn checkpoint(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_string();
        self.write(move |connection| {
            connection
                .query_row(
                    "SELECT position FROM checkpoints WHERE name = ?1",
                    [name],
                    |row| row.get(0),
                )
                .optional()
        })
        .await
    }

    /// Stores `messages` (skipping ids already present) and, in the same transaction, the
    /// checkpoints (name, position). Returns how many messages were new.
    pub async fn ingest(
        &self,
        messages: Vec<NewMessage>,
        checkpoints: Vec<(String, String)>,
    ) -> Result<u64> {
        self.write(move |connection| {
            let transaction = connection.transaction()?;
            let mut inserted = 0;
            {
                let mut insert = transaction.prepare_cached(
                    "INSERT OR IGNORE INTO messages (id, route, topic, partition_number, offset_number, position, message_key, payload, created_at, status, next_attempt_at, last_error, finished_at, undeliverable, barrier, old_key, front)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?12, ?11 IS NOT NULL, ?13, ?14,
                         ?7 IS NULL OR NOT EXISTS (
                             SELECT 1 FROM messages earlier INDEXED BY messages_open_by_key
                             WHERE earlier.route = ?2 AND earlier.topic = ?3 AND earlier.message_key = ?7
                               AND earlier.status <> 'delivered' AND earlier.undeliverable = 0))",
                )?;
                for message in &messages {
                    let status = if message.refused.is_some() { "failed" } else { "pending" };
                    let finished = message.refused.as_ref().map(|_| message.created_at_ms);
                    inserted += insert.execute(params![
                        message.id,
                        message.route,
                        message.topic,
                        message.partition,
                        message.offset,
                        message.position,
                        message.key,
                        message.payload,
                        message.created_at_ms,
                        status,
                        message.refused,
                        finished,
                        message.barrier,
                        message.old_key,
                    ])? as u64;
                }
            }
            for (name, position) in checkpoints {
                transaction.execute(
                    "INSERT INTO checkpoints (name, position) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET position = excluded.position",
                    params![name, position],
                )?;
            }
            transaction.commit()?;
            Ok(inserted)
        })
        .await
    }

    /// Up to `limit` messages of `route` due at `now_ms`, oldest first (see the module notes on
    /// ordering).
    pub async fn due(
        &self,
        route: &str,
        ordering: Ordering,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueMessage>> {
        let route = route.to_string();
        self.dispatch(move |connection| {
            let sql = match ordering {
                // Held back: by an earlier undelivered message (retrying or parked) of the
                // same key (`front` says there is none; a row that moved is also held by its
                // old key); by an earlier pending table-wide change of the topic; and a
                // table-wide change by any earlier pending message of the topic. A message
                // that can never be sent holds nothing back.
                Ordering::Key => {
                    "SELECT seq, id, topic, partition_number, offset_number, payload, attempts - budget_start FROM messages m INDEXED BY messages_fronts
                     WHERE route = ?1 AND status = 'pending' AND front = 1 AND next_attempt_at <= ?2
                       AND (m.old_key IS NULL OR NOT EXISTS (
                           SELECT 1 FROM messages earlier INDEXED BY messages_open_by_key
                           WHERE earlier.route = m.route AND earlier.topic = m.topic
                             AND earlier.message_key = m.old_key AND earlier.seq < m.seq
                             AND earlier.status <> 'delivered' AND earlier.undeliverable = 0))
                       AND (m.message_key IS NULL OR NOT EXISTS (
                           SELECT 1 FROM messages earlier INDEXED BY messages_open_by_old_key
                           WHERE earlier.route = m.route AND earlier.topic = m.topic AND earlier.old_key IS NOT NULL
                             AND earlier.old_key IN (m.message_key, m.old_key) AND earlier.seq < m.seq
                             AND earlier.status <> 'delivered' AND earlier.undeliverable = 0))
                       AND NOT EXISTS (
                           SELECT 1 FROM messages earlier INDEXED BY messages_open_barriers
                           WHERE earlier.route = m.route AND earlier.topic = m.topic AND earlier.seq < m.seq
                             AND earlier.barrier = 1 AND earlier.status = 'pending'
                             AND earlier.status <> 'delivered' AND earlier.undeliverable = 0)
                       AND (m.barrier = 0 OR NOT EXISTS (
                           SELECT 1 FROM messages earlier INDEXED BY messages_by_status
                           WHERE earlier.route = m.route AND earlier.status = 'pending' AND earlier.seq < m.seq
                             AND earlier.topic = m.topic AND earlier.undeliverable = 0))
                     ORDER BY seq LIMIT ?3"
                }
                Ordering::None => {
                    "SELECT seq, id, topic, partition_number, offset_number, payload, attempts - budget_start FROM messages
                     WHERE route = ?1 AND status = 'pending' AND next_attempt_at <= ?2
                     ORDER BY seq LIMIT ?3"
                }
            };
            let mut statement = connection.prepare_cached(sql)?;
            let rows = statement.query_map(params![route, now_ms, limit as i64], |row| {
                Ok(DueMessage {
                    seq: row.get(0)?,
                    id: row.get(1)?,
                    topic: row.get(2)?,
                    partition: row.get(3)?,
                    offset: row.get(4)?,
                    payload: row.get(5)?,
                    attempts_in_budget: row.get::<_, i64>(6)?.max(0) as u32,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// When the next retry of `route` is scheduled after `now_ms` (None: none is). Messages
    /// due already but held back by their key wait for an outcome, which wakes the worker.
    pub async fn next_due_at(&self, route: &str, now_ms: i64) -> Result<Option<i64>> {
        let route = route.to_string();
        self.dispatch(move |connection| {
            connection.query_row(
                "SELECT min(next_attempt_at) FROM messages WHERE route = ?1 AND status = 'pending' AND next_attempt_at > ?2",
                params![route, now_ms],
                |row| row.get(0),
            )
        })
        .await
    }

    /// Stores the attempts and what follows from them, in one transaction.
    pub async fn record(&self, outcomes: Vec<Outcome>) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.write(move |connection| {
            let transaction = connection.transaction()?;
            {
                let mut attempt = transaction.prepare_cached(
                    "INSERT OR REPLACE INTO attempts (message_seq, number, at, http_status, latency_ms, error, response)
                     SELECT ?1, attempts + 1, ?2, ?3, ?4, ?5, ?6 FROM messages WHERE seq = ?1",
                )?;
                // After a delivery, the next undelivered message of the key is its front.
                let mut promote = transaction.prepare_cached(
                    "UPDATE messages SET front = 1 WHERE seq = (
                         SELECT min(earlier.seq) FROM messages delivered, messages earlier INDEXED BY messages_open_by_key
                         WHERE delivered.seq = ?1 AND delivered.message_key IS NOT NULL
                           AND earlier.route = delivered.route AND earlier.topic = delivered.topic
                           AND earlier.message_key = delivered.message_key
                           AND earlier.status <> 'delivered' AND earlier.undeliverable = 0)",
                )?;
                let mut update = transaction.prepare_cached(
                    "UPDATE messages SET attempts = attempts + 1, status = ?2, next_attempt_at = ?3,
                         last_http_status = ?4, last_error = ?5,
                         first_attempt_at = coalesce(first_attempt_at, ?6), last_attempt_at = ?6,
                         finished_at = ?7
                     WHERE seq = ?1 AND status = 'pending'",
                )?;
                for outcome in &outcomes {
                    let at = &outcome.attempt;
                    attempt.execute(params![
                        outcome.seq,
                        at.at_ms,
                        at.http_status,
                        at.latency_ms,
                        at.error,
                        at.response,
                    ])?;
                    let (status, next_at, finished) = match outcome.next {
                        Next::Delivered => ("delivered", at.at_ms, Some(at.at_ms)),
                        Next::RetryAt(when) => ("pending", when, None),
                        Next::Failed => ("failed", at.at_ms, Some(at.at_ms)),
                    };
                    update.execute(params![
                        outcome.seq,
                        status,
                        next_at,
                        at.http_status,
                        at.error,
                        at.at_ms,
                        finished,
                    ])?;
                    if outcome.next == Next::Delivered {
                        promote.execute([outcome.seq])?;
                    }
                }
            }
            transaction.commit()
        })
        .await
    }

    /// See [`super::DeliveryLog::retry`].
    pub async fn retry(&self, filter: Filter, now_ms: i64) -> Result<u64> {
        let (condition, mut values) = where_clause(&filter);
        self.write(move |connection| {
                let transaction = connection.transaction()?;
                start_requeue(&transaction)?;
                transaction.execute(
                    &format!(
                        "INSERT INTO requeued_keys SELECT DISTINCT route, topic, message_key FROM messages
                         WHERE status <> 'pending' AND undeliverable = 0 AND message_key IS NOT NULL AND {condition}"
                    ),
                    rusqlite::params_from_iter(values.clone()),
                )?;
                values.push(rusqlite::types::Value::Integer(now_ms));
                let sql = format!(
                    "UPDATE messages SET status = 'pending', budget_start = attempts, next_attempt_at = ?{}, finished_at = NULL, front = 1
                     WHERE status <> 'pending' AND undeliverable = 0 AND {condition}",
                    values.len()
                );
                let changed = transaction.execute(&sql, rusqlite::params_from_iter(values))?;
                refresh_fronts(&transaction)?;
                transaction.commit()?;
                Ok(changed as u64)
            })
            .await
    }

    /// Stores messages read again from the source (a replay): those still in the log are
    /// queued again with a fresh retry budget (unless pending), the others are stored anew.
    /// Returns how many were queued.
    pub async fn replay(&self, messages: Vec<NewMessage>, now_ms: i64) -> Result<u64> {
        self.write(move |connection| {
            let transaction = connection.transaction()?;
            let mut queued = 0;
            start_requeue(&transaction)?;
            {
                let mut keys = transaction.prepare_cached(
                    "INSERT INTO requeued_keys VALUES (?1, ?2, ?3)",
                )?;
                for message in messages.iter().filter(|message| message.key.is_some()) {
                    keys.execute(params![message.route, message.topic, message.key])?;
                }
                let mut upsert = transaction.prepare_cached(
                    "INSERT INTO messages (id, route, topic, partition_number, offset_number, position, message_key, payload, created_at, status, next_attempt_at, front)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10,
                         ?7 IS NULL OR NOT EXISTS (
                             SELECT 1 FROM messages earlier INDEXED BY messages_open_by_key
                             WHERE earlier.route = ?2 AND earlier.topic = ?3 AND earlier.message_key = ?7
                               AND earlier.status <> 'delivered' AND earlier.undeliverable = 0))
                     ON CONFLICT (id) DO UPDATE SET status = 'pending', budget_start = attempts,
                         next_attempt_at = excluded.next_attempt_at, finished_at = NULL, front = 1,
                         payload = excluded.payload, undeliverable = 0, last_error = NULL
                     WHERE status <> 'pending'",
                )?;
                // A record that cannot be sent stays as it was logged.
                for message in messages.iter().filter(|message| message.refused.is_none()) {
                    queued += upsert.execute(params![
                        message.id,
                        message.route,
                        message.topic,
                        message.partition,
                        message.offset,
                        message.position,
                        message.key,
                        message.payload,
                        message.created_at_ms,
                        now_ms,
                    ])? as u64;
                }
            }
            refresh_fronts(&transaction)?;
            transaction.commit()?;
            Ok(queued)
        })
        .await
    }

    /// For each of `partitions` (topic, partition), the lowest offset whose message is still
    /// pending in any route, if one is: everything before it has an outcome in the log. One
    /// index probe per partition.
    pub async fn lowest_pending_offsets(
        &self,
        partitions: Vec<(String, i32)>,
    ) -> Result<Vec<(String, i32, i64)>> {
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT min(offset_number) FROM messages INDEXED BY messages_pending_offsets
                 WHERE status = 'pending' AND partition_number IS NOT NULL AND topic = ?1 AND partition_number = ?2",
            )?;
            let mut lowest = Vec::new();
            for (topic, partition) in partitions {
                let found: Option<i64> =
                    statement.query_row(params![topic, partition], |row| row.get(0))?;
                if let Some(offset) = found {
                    lowest.push((topic, partition, offset));
                }
            }
            Ok(lowest)
        })
        .await
    }

    /// Every checkpoint whose name starts with `prefix`.
    pub async fn checkpoints(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let pattern = format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_"));
        self.write(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT name, position FROM checkpoints WHERE name LIKE ?1 ESCAPE '\\'",
            )?;
            let rows = statement.query_map([pattern], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// Messages matching `filter`, newest first, `limit` at a time after the cursor `before`
    /// (a `seq`); returns them and the cursor of the next page.
    pub async fn search(
        &self,
        filter: Filter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<MessageRow>, Option<i64>)> {
        self.read(move |connection| {
            let (condition, mut values) = where_clause(&filter);
            let mut sql = format!("SELECT {ROW_COLUMNS} FROM messages WHERE {condition}");
            if let Some(before) = before {
                values.push(rusqlite::types::Value::Integer(before));
                sql.push_str(&format!(" AND seq < ?{}", values.len()));
            }
            values.push(rusqlite::types::Value::Integer(limit as i64 + 1));
            sql.push_str(&format!(" ORDER BY seq DESC LIMIT ?{}", values.len()));
            let mut statement = connection.prepare(&sql)?;
            let mut rows: Vec<MessageRow> = statement
                .query_map(rusqlite::params_from_iter(values), message_row)?
                .collect::<rusqlite::Result<_>>()?;
            let next = if rows.len() > limit {
                rows.truncate(limit);
                rows.last().map(|row| row.seq)
            } else {
                None
            };
            Ok((rows, next))
        })
        .await
    }

    /// One message with its payload and attempts.
    pub async fn message(
        &self,
        id: &str,
    ) -> Result<Option<(MessageRow, Vec<u8>, Vec<AttemptRow>)>> {
        let id = id.to_string();
        self.read(move |connection| {
            let Some(row) = connection
                .query_row(
                    &format!("SELECT {ROW_COLUMNS} FROM messages WHERE id = ?1"),
                    [&id],
                    message_row,
                )
                .optional()?
            else {
                return Ok(None);
            };
            let payload: Vec<u8> = connection.query_row(
                "SELECT payload FROM messages WHERE seq = ?1",
                [row.seq],
                |found| found.get(0),
            )?;
            let mut statement = connection.prepare(
                "SELECT number, at, http_status, latency_ms, error, response FROM attempts WHERE message_seq = ?1 ORDER BY number",
            )?;
            let attempts = statement
                .query_map([row.seq], |found| {
                    Ok(AttemptRow {
                        number: found.get(0)?,
                        at: found.get(1)?,
                        http_status: found.get(2)?,
                        latency_ms: found.get(3)?,
                        error: found.get(4)?,
                        response: found.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some((row, payload, attempts)))
        })
        .await
    }

    /// Messages per route and status.
    pub async fn counts(&self) -> Result<Vec<Count>> {
        self.read(|connection| {
            let mut statement = connection.prepare(
                "SELECT route, status, count(*) FROM messages GROUP BY route, status ORDER BY route, status",
            )?;
            let counts = statement
                .query_map([], |row| {
                    Ok(Count {
                        route: row.get(0)?,
                        status: row.get(1)?,
                        messages: row.get(2)?,
                    })
                })?
                .collect();
            counts
        })
        .await
    }

    /// How many messages wait for delivery in all routes.
    pub async fn pending(&self) -> Result<u64> {
        self.read(|connection| {
            connection.query_row(
                "SELECT count(*) FROM messages WHERE status = 'pending'",
                [],
                |row| row.get::<_, i64>(0).map(|count| count as u64),
            )
        })
        .await
    }

    /// Deletes `route`'s messages in `status` finished before `before_ms`, with their
    /// attempts, a bounded number per transaction; returns how many.
    pub async fn prune(&self, route: &str, status: &'static str, before_ms: i64) -> Result<u64> {
        let route = route.to_string();
        let mut total = 0;
        loop {
            let route = route.clone();
            let deleted = self
                .write(move |connection| {
                    let transaction = connection.transaction()?;
                    transaction.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS pruned (seq INTEGER PRIMARY KEY, route TEXT, topic TEXT, message_key TEXT)",
                        [],
                    )?;
                    transaction.execute("DELETE FROM pruned", [])?;
                    transaction.execute(
                        "INSERT INTO pruned SELECT seq, route, topic, message_key FROM messages WHERE route = ?1 AND status = ?2 AND finished_at < ?3 LIMIT 5000",
                        params![route, status, before_ms],
                    )?;
                    transaction.execute(
                        "DELETE FROM attempts WHERE message_seq IN (SELECT seq FROM pruned)",
                        [],
                    )?;
                    let deleted = transaction
                        .execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM pruned)", [])?;
                    // A parked message that leaves the log no longer holds its key back.
                    transaction.execute(
                        "UPDATE messages SET front = 1 WHERE front = 0 AND seq IN (
                             SELECT (SELECT min(earlier.seq) FROM messages earlier INDEXED BY messages_open_by_key
                                     WHERE earlier.route = pruned.route AND earlier.topic = pruned.topic
                                       AND earlier.message_key = pruned.message_key
                                       AND earlier.status <> 'delivered' AND earlier.undeliverable = 0)
                             FROM pruned WHERE pruned.message_key IS NOT NULL)",
                        [],
                    )?;
                    transaction.commit()?;
                    Ok(deleted as u64)
                })
                .await?;
            total += deleted;
            if deleted < 5000 {
                return Ok(total);
            }
        }
    }
}

/// Starts collecting the keys of messages queued again (in `requeued_keys`).
fn start_requeue(transaction: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS requeued_keys (route TEXT, topic TEXT, message_key TEXT);
         DELETE FROM requeued_keys;",
    )
}

/// After messages were queued again: which pending message of each of their keys is the
/// front (an earlier message queued again puts the later ones back behind it).
fn refresh_fronts(transaction: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    transaction.execute(
        "UPDATE messages SET front = NOT EXISTS (
             SELECT 1 FROM messages earlier INDEXED BY messages_open_by_key
             WHERE earlier.route = messages.route AND earlier.topic = messages.topic
               AND earlier.message_key = messages.message_key AND earlier.seq < messages.seq
               AND earlier.status <> 'delivered' AND earlier.undeliverable = 0)
         WHERE status = 'pending' AND message_key IS NOT NULL
           AND EXISTS (SELECT 1 FROM requeued_keys requeued
                       WHERE requeued.route = messages.route AND requeued.topic = messages.topic
                         AND requeued.message_key = messages.message_key)",
        [],
    )?;
    Ok(())
}

fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        seq: row.get(0)?,
        id: row.get(1)?,
        route: row.get(2)?,
        topic: row.get(3)?,
        partition: row.get(4)?,
        offset: row.get(5)?,
        position: row.get(6)?,
        key: row.get(7)?,
        status: row.get(8)?,
        attempts: row.get(9)?,
        last_http_status: row.get(10)?,
        last_error: row.get(11)?,
        created_at: row.get(12)?,
        first_attempt_at: row.get(13)?,
        last_attempt_at: row.get(14)?,
        next_attempt_at: row.get(15)?,
    })
}

/// The SQL condition of a filter and its values (numbered from ?1).
fn where_clause(filter: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    let (condition, values) = super::filter_condition(
        filter,
        |number| format!("?{number}"),
        |text| {
            format!("(instr(CAST(payload AS TEXT), {text}) > 0 OR instr(coalesce(last_error, ''), {text}) > 0 OR id = {text})")
        },
    );
    let values = values
        .into_iter()
        .map(|value| match value {
            super::FilterValue::Text(text) => rusqlite::types::Value::Text(text),
            super::FilterValue::Integer(number) => rusqlite::types::Value::Integer(number),
        })
        .collect();
    (condition, values)
}

#[cfg(test)]
mod tests {
    use super::super::{conformance, DeliveryLog};

    /// Runs one conformance check on a log in a fresh directory.
    async fn check<F, Fut>(name: &str, check: F)
    where
        F: FnOnce(DeliveryLog) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let directory = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        let path = directory.join("log.db");
        let log = DeliveryLog::open(&path).unwrap();
        assert_eq!(
            DeliveryLog::open(&path).err().map(|error| error.code()),
            Some("relay.log_in_use")
        );
        check(log).await;
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[tokio::test]
    async fn moved_rows_and_table_wide_changes_keep_their_place() {
        check(
            "ferry-relay-order",
            conformance::moved_rows_and_table_wide_changes_keep_their_place,
        )
        .await;
    }

    #[tokio::test]
    async fn a_message_queued_again_goes_before_the_later_ones_of_its_key() {
        check(
            "ferry-relay-requeue",
            conformance::a_message_queued_again_goes_before_the_later_ones_of_its_key,
        )
        .await;
    }

    #[tokio::test]
    async fn retention_of_a_parked_message_releases_its_key() {
        check(
            "ferry-relay-prune",
            conformance::retention_of_a_parked_message_releases_its_key,
        )
        .await;
    }

    #[tokio::test]
    async fn key_order_holds_back_only_the_failed_key() {
        check(
            "ferry-relay-log",
            conformance::key_order_holds_back_only_the_failed_key,
        )
        .await;
    }

    #[tokio::test]
    async fn checkpoints_are_kept_by_name() {
        check(
            "ferry-relay-checkpoints",
            conformance::checkpoints_are_kept_by_name,
        )
        .await;
    }

    #[tokio::test]
    async fn a_retry_recorded_with_the_delivery_before_it_is_not_held() {
        check(
            "ferry-relay-batch",
            conformance::a_retry_recorded_with_the_delivery_before_it_is_not_held,
        )
        .await;
    }

    #[tokio::test]
    async fn a_refused_message_is_never_sent() {
        check(
            "ferry-relay-refused",
            conformance::a_refused_message_is_never_sent,
        )
        .await;
    }

    #[tokio::test]
    async fn a_replay_queues_again_and_stores_new_ones() {
        check(
            "ferry-relay-replay",
            conformance::a_replay_queues_again_and_stores_new_ones,
        )
        .await;
    }
}
