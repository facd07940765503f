//! The change stream: a publication naming the migrated tables, a logical replication slot
//! (pgoutput) that retains the WAL until ferry acknowledges it, and a replication connection that
//! streams decoded changes.
//!
//! ```text
//!   create:  CREATE PUBLICATION ferry_<name> FOR TABLE ...
//!            CREATE_REPLICATION_SLOT ferry_<name> LOGICAL pgoutput EXPORT_SNAPSHOT
//!              -> consistent point P and a snapshot of exactly the data before P
//!   stream:  START_REPLICATION SLOT ferry_<name> LOGICAL <checkpoint> (proto_version '1', ...)
//!   ack:     standby status updates carry the durable checkpoint (sent by the transport about
//!            once a second, also when idle)
//! ```
//!
//! The slot is created after the publication so that every change after P is published. A slot
//! that disappeared (dropped, or invalidated by `max_slot_wal_keep_size`) means changes are lost:
//! the stream refuses to continue and tells the operator to start over.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::change::{Change, Relation, RelationColumn, StreamEvent};
use ferry_core::connector::ChangeStream;
use ferry_core::{Cell, Error, Lsn, Position, Result, TableName, Value};
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent};
use tokio_postgres::Client;

use super::codec::decode_text;
use super::config::ConnectionConfig;
use super::connection::startup_options;
use super::ddl::qualified;
use super::errors::{classify, classify_replication};
use super::pgoutput::{self, Message, TupleValue};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// The slot and publication name of a migration.
pub fn stream_name(migration: &str) -> String {
    format!("ferry_{migration}")
}

/// The replication origin that tags the transactions ferry's applier of `migration` writes.
pub fn origin_name(migration: &str) -> String {
    format!("ferry_{migration}")
}

/// The prefix of the logical message a fence writes, which moves the stream past the fence.
pub(crate) const FENCE_MESSAGE_PREFIX: &str = "ferry.fence";

fn replication_config(config: &ConnectionConfig, migration: &str) -> ReplicationConfig {
    let name = stream_name(migration);
    ReplicationConfig::new(
        config.host(),
        config.user(),
        config.password(),
        config.database(),
        name.clone(),
        name,
    )
    .with_port(config.port())
    .with_tls(config.tls().replication(config.host()))
    .with_options(startup_options())
    .with_application_name(format!("ferry:{migration}"))
    .with_status_interval(Duration::from_secs(1))
    .with_wakeup_interval(Duration::from_secs(5))
    // Messages read ahead of the decoder: with large rows each can be megabytes.
    .with_buffer_size(64)
}

/// Why a table's replica identity does not suit ferry, if it does not: `NOTHING` (or `DEFAULT`
/// without a primary key) makes the application's own UPDATE and DELETE fail once the table is
/// published, and an identity index other than the primary key leaves the key out of the old
/// row of a DELETE. A table without a primary key is applied by its identity index.
pub(crate) async fn replica_identity_problem(
    client: &Client,
    table: &TableName,
) -> Result<Option<(String, String)>> {
    let row = client
        .query_one(
            "SELECT c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_index r JOIN pg_index p ON p.indrelid = r.indrelid AND p.indisprimary
                            WHERE r.indrelid = c.oid AND r.indisreplident AND r.indkey::text = p.indkey::text),
                    EXISTS (SELECT 1 FROM pg_index p WHERE p.indrelid = c.oid AND p.indisprimary)
             FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&qualified(table)],
        )
        .await
        .map_err(|error| classify(error, "reading replica identities"))?;
    let identity: String = row.get(0);
    // A partitioned table's identity is each partition's own (ALTER TABLE on the parent does
    // not reach them): a partition whose updates cannot be published would fail on the source.
    let leaves: Vec<String> = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_partition_tree($1::text::regclass) t
             JOIN pg_class c ON c.oid = t.relid
             WHERE t.isleaf AND t.level > 0
               AND (c.relreplident = 'n'
                    OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index p WHERE p.indrelid = c.oid AND p.indisprimary)))
             ORDER BY 1",
            &[&qualified(table)],
        )
        .await
        .map(|rows| rows.iter().map(|row| row.get(0)).collect())
        .unwrap_or_default();
    if !leaves.is_empty() {
        return Ok(Some((
            format!(
                "partitions of {table} have no replica identity ferry can use (no primary key, REPLICA IDENTITY DEFAULT or NOTHING): once published, their UPDATE and DELETE statements fail on the source: {}",
                leaves.join(", ")
            ),
            format!(
                "set it on each partition (the parent's does not reach them): ALTER TABLE {} REPLICA IDENTITY FULL, and the same for the others",
                leaves[0]
            ),
        )));
    }
    let hint = format!(
        "ALTER TABLE {} REPLICA IDENTITY DEFAULT (or FULL)",
        qualified(table)
    );
    // The unique index on NOT NULL columns ferry would key the table by, if it has one.
    let candidate = super::catalog::substitute_key(client, table, "reading replica identities")
        .await
        .ok()
        .flatten()
        .map(|key| key.index_sql);
    let index = candidate.unwrap_or_else(|| "<a unique index on NOT NULL columns>".to_string());
    Ok(match identity.as_str() {
        "n" => Some((
            format!("table {table} has REPLICA IDENTITY NOTHING: once published, its UPDATE and DELETE statements fail on the source"),
            hint,
        )),
        // Without a primary key, the identity index is the key ferry applies by.
        "i" if !row.get::<_, bool>(1) && row.get::<_, bool>(2) => Some((
            format!("table {table} has a replica identity index other than its primary key: a DELETE would not carry the key ferry applies by"),
            hint,
        )),
        "d" if !row.get::<_, bool>(2) => Some((
            format!("table {table} has no primary key and REPLICA IDENTITY DEFAULT: once published, its UPDATE and DELETE statements fail on the source"),
            format!(
                "ALTER TABLE {} REPLICA IDENTITY USING INDEX {index} (ferry then applies changes by it), or REPLICA IDENTITY FULL",
                qualified(table)
            ),
        )),
        _ => None,
    })
}

/// Creates or updates the publication so that it covers exactly `tables`. Refuses a table whose
/// replica identity would break the application or the stream (see
/// [`replica_identity_problem`]) before publishing anything.
pub(crate) async fn sync_publication(
    client: &Client,
    migration: &str,
    tables: &[TableName],
) -> Result<()> {
    for table in tables {
        if let Some((problem, hint)) = replica_identity_problem(client, table).await? {
            return Err(Error::operator("source.replica_identity", problem).with_hint(hint));
        }
    }
    let name = stream_name(migration);
    // ONLY: a table's inheritance children are tables of their own, published only when
    // selected (without it, a parent's publication carries every child's changes). A
    // partitioned table's partitions are published with it all the same.
    let list: Vec<String> = tables
        .iter()
        .map(|table| format!("ONLY {}", qualified(table)))
        .collect();
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|error| classify(error, "looking up the publication"))?
        .is_some();
    // A partitioned table's changes arrive as changes of that table (the one migrated), not of
    // the partition that holds the row, so a row that changes partition stays one row.
    let via_root: bool = client
        .query_one(
            "SELECT current_setting('server_version_num')::int >= 130000",
            &[],
        )
        .await
        .map_err(|error| classify(error, "reading the server version"))?
        .get(0);
    let sql = match (exists, via_root) {
        (true, false) => format!("ALTER PUBLICATION {name} SET TABLE {}", list.join(", ")),
        (true, true) => format!(
            "ALTER PUBLICATION {name} SET TABLE {}; ALTER PUBLICATION {name} SET (publish_via_partition_root = true)",
            list.join(", ")
        ),
        (false, false) => format!("CREATE PUBLICATION {name} FOR TABLE {}", list.join(", ")),
        (false, true) => format!(
            "CREATE PUBLICATION {name} FOR TABLE {} WITH (publish_via_partition_root = true)",
            list.join(", ")
        ),
    };
    client.batch_execute(&sql).await.map_err(|error| {
        classify(error, &format!("creating publication {name}"))
            .with_hint("the source user must own the tables (or be superuser) to publish them")
    })
}

/// Drops a leftover slot of this migration (from a run that never stored its checkpoint).
pub(crate) async fn drop_leftover_slot(client: &Client, migration: &str) -> Result<()> {
    let name = stream_name(migration);
    let row = client
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&name],
        )
        .await
        .map_err(|error| classify(error, "looking up the replication slot"))?;
    match row {
        Some(row) if row.get::<_, bool>(0) => Err(Error::transient(
            "source.slot_busy",
            format!("replication slot {name} is in use"),
        )
        .with_hint("another ferry is running this migration, or the server has not yet noticed that the previous one ended; stop the other one if it exists")),
        Some(_) => {
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[&name])
                .await
                .map_err(|error| classify(error, "dropping a leftover replication slot"))?;
            Ok(())
        }
        None => Ok(()),
    }
}

/// Checks that the slot of `migration` still exists and is usable.
pub(crate) async fn require_slot(client: &Client, migration: &str) -> Result<()> {
    let name = stream_name(migration);
    let row = client
        .query_opt("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()", &[&name])
        .await
        .map_err(|error| classify(error, "looking up the replication slot"))?;
    match row {
        None => Err(Error::operator("source.slot_missing", format!("replication slot {name} no longer exists on the source, so changes since the last checkpoint are lost"))
            .with_hint("start the migration over with `ferry run --restart` (this re-copies every table)")),
        Some(row) if row.get::<_, Option<String>>(0).as_deref() == Some("lost") => {
            Err(Error::operator("source.slot_lost", format!("replication slot {name} was invalidated (the source removed WAL it still needed)"))
                .with_hint("raise max_slot_wal_keep_size, then start over with `ferry run --restart`"))
        }
        Some(_) => Ok(()),
    }
}

/// Creates the slot with an exported snapshot. Returns the consistent point, the snapshot id and
/// the session that must stay open while the snapshot is imported.
pub(crate) async fn create_slot(
    config: &ConnectionConfig,
    migration: &str,
) -> Result<(Lsn, String, ReplicationClient)> {
    create_slot_named(config, migration, &stream_name(migration), false).await
}

/// A temporary slot (gone with its session) whose exported snapshot is exact at its consistent
/// point: a snapshot whose place in the change stream is known.
pub(crate) async fn create_temporary_slot(
    config: &ConnectionConfig,
) -> Result<(Lsn, String, ReplicationClient)> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "ferry_snapshot_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    create_slot_named(config, "snapshot", &name, true).await
}

async fn create_slot_named(
    config: &ConnectionConfig,
    migration: &str,
    slot: &str,
    temporary: bool,
) -> Result<(Lsn, String, ReplicationClient)> {
    let what = format!("creating replication slot {slot} on {}", config.describe());
    let mut client = ReplicationClient::connect_gated(replication_config(config, migration))
        .await
        .map_err(|error| classify_replication(error, &what))?;
    let command = format!(
        "CREATE_REPLICATION_SLOT {slot}{} LOGICAL pgoutput EXPORT_SNAPSHOT",
        if temporary { " TEMPORARY" } else { "" }
    );
    // Creating a slot waits for running transactions to end, so allow more than a network timeout.
    let limit = config.network_timeout() * 4;
    let rows = match tokio::time::timeout(limit, client.simple_query(&command)).await {
        Ok(rows) => rows.map_err(|error| classify_replication(error, &what))?,
        Err(_) => return Err(Error::transient("postgres.connection", format!("{what}: no answer within {} s", limit.as_secs()))
            .with_hint("a long-running transaction on the source delays slot creation, or the source is unreachable")),
    };
    let row = rows.first().ok_or_else(|| {
        Error::definite("source.slot", format!("{what}: the server returned no row"))
    })?;
    let text = |index: usize| {
        row.get(index)
            .and_then(|value| value.as_ref())
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
            .unwrap_or_default()
    };
    let position = Lsn::parse(&text(1)).ok_or_else(|| {
        Error::definite(
            "source.slot",
            format!("{what}: unreadable consistent point {:?}", text(1)),
        )
    })?;
    Ok((position, text(2), client))
}

/// Opens the stream from `position`.
pub(crate) async fn open(
    config: &ConnectionConfig,
    migration: &str,
    position: Lsn,
    keys: HashMap<TableName, Vec<String>>,
    ignore_writes_of: &[String],
) -> Result<PostgresChangeStream> {
    let what = format!(
        "starting replication from slot {} at {position} on {}",
        stream_name(migration),
        config.describe()
    );
    let replication =
        replication_config(config, migration).with_start_lsn(pgwire_replication::Lsn(position.0));
    let mut client = ReplicationClient::connect(replication)
        .await
        .map_err(|error| classify_replication(error, &what))?;
    match tokio::time::timeout(config.network_timeout(), client.wait_started()).await {
        Ok(started) => started.map_err(|error| classify_replication(error, &what))?,
        Err(_) => {
            client.abort();
            return Err(Error::transient(
                "postgres.connection",
                format!(
                    "{what}: no answer within {} s",
                    config.network_timeout().as_secs()
                ),
            ));
        }
    }
    Ok(PostgresChangeStream {
        client: Some(client),
        relations: HashMap::new(),
        keys,
        shapes: HashMap::new(),
        schema_changed: None,
        silence_limit: config.network_timeout(),
        last_heard: std::time::Instant::now(),
        ignored_origins: ignore_writes_of
            .iter()
            .map(|name| origin_name(name))
            .collect(),
        skipping: false,
    })
}

struct KnownRelation {
    relation: Arc<Relation>,
    type_oids: Vec<u32>,
}

/// Decoded changes from a pgoutput replication connection.
pub(super) struct PostgresChangeStream {
    client: Option<ReplicationClient>,
    relations: HashMap<u32, KnownRelation>,
    /// Primary key columns per table. The log marks the replica identity as key, which for
    /// REPLICA IDENTITY FULL is every column; rows are identified by the primary key instead.
    keys: HashMap<TableName, Vec<String>>,
    /// The columns (names and types) each table's rows were last logged with in this session.
    /// A relation message with others (or the first one) is reported as a schema change.
    shapes: HashMap<TableName, Vec<(String, u32, i32)>>,
    /// A schema change to report before the next change.
    schema_changed: Option<Arc<Relation>>,
    /// No message at all (not even a keepalive) for this long means the connection is lost.
    silence_limit: Duration,
    /// When the server last sent anything (keepalives included).
    last_heard: std::time::Instant,
    /// Replication origins whose transactions are left out (ferry's own writes in the other
    /// direction).
    ignored_origins: HashSet<String>,
    /// The current transaction carries an ignored origin.
    skipping: bool,
}

impl PostgresChangeStream {
    fn relation(&self, id: u32) -> Result<&KnownRelation> {
        self.relations.get(&id).ok_or_else(|| {
            Error::definite(
                "pgoutput.unknown_relation",
                format!("a change refers to relation {id}, which the stream never described"),
            )
        })
    }

    fn cells(known: &KnownRelation, tuple: Vec<TupleValue>) -> Result<Vec<Cell>> {
        if tuple.len() != known.type_oids.len() {
            return Err(Error::definite(
                "pgoutput.shape",
                format!(
                    "a change to {} has {} columns, the relation {}",
                    known.relation.table,
                    tuple.len(),
                    known.type_oids.len()
                ),
            ));
        }
        tuple
            .into_iter()
            .zip(&known.type_oids)
            .map(|(value, type_oid)| match value {
                TupleValue::Null => Ok(Cell::Value(Value::Null)),
                TupleValue::Unchanged => Ok(Cell::Unchanged),
                TupleValue::Text(text) => Ok(Cell::Value(decode_text(*type_oid, &text))),
                TupleValue::Binary(_) => Err(Error::definite(
                    "pgoutput.binary",
                    "binary values were not requested",
                )),
            })
            .collect()
    }

    fn key(known: &KnownRelation, tuple: Vec<TupleValue>) -> Result<Vec<Value>> {
        let cells = Self::cells(known, tuple)?;
        if known.relation.is_keyless() {
            // The whole old row (REPLICA IDENTITY FULL), NULLs included.
            return cells
                .into_iter()
                .map(|cell| match cell {
                    Cell::Value(value) => Ok(value),
                    Cell::Unchanged => Err(Error::definite(
                        "pgoutput.key",
                        format!(
                            "a change to {} (a table without a key) carries no whole old row",
                            known.relation.table
                        ),
                    )
                    .with_hint("set ALTER TABLE ... REPLICA IDENTITY FULL on the source")),
                })
                .collect();
        }
        known
            .relation
            .key_indexes()
            .into_iter()
            .map(|index| match &cells[index] {
                Cell::Value(Value::Null) | Cell::Unchanged => Err(Error::definite(
                    "pgoutput.key",
                    format!("a change to {} carries no key value", known.relation.table),
                )),
                Cell::Value(value) => Ok(value.clone()),
            })
            .collect()
    }

    fn decode(&mut self, data: &[u8]) -> Result<Option<Change>> {
        Ok(match pgoutput::decode(data)? {
            Message::Relation {
                id,
                namespace,
                name,
                columns,
            } => {
                let table = TableName::new(namespace, name);
                let names: Vec<(String, u32, i32)> = columns
                    .iter()
                    .map(|column| (column.name.clone(), column.type_oid, column.type_modifier))
                    .collect();
                // The first description of a table in a session counts too: its columns may
                // have changed while ferry was stopped.
                let changed =
                    self.keys.contains_key(&table) && self.shapes.get(&table) != Some(&names);
                let primary_key = self.keys.get(&table);
                let relation = Relation {
                    id,
                    columns: columns
                        .iter()
                        .map(|column| RelationColumn {
                            type_signature: Some(super::types::type_signature(
                                column.type_oid,
                                column.type_modifier,
                            )),
                            name: column.name.clone(),
                            is_key: primary_key
                                .map_or(column.is_key, |key| key.contains(&column.name)),
                        })
                        .collect(),
                    table,
                };
                let relation = Arc::new(relation);
                if changed {
                    self.shapes.insert(relation.table.clone(), names);
                    self.schema_changed = Some(relation.clone());
                }
                self.relations.insert(
                    id,
                    KnownRelation {
                        relation,
                        type_oids: columns.iter().map(|column| column.type_oid).collect(),
                    },
                );
                None
            }
            Message::Insert { relation, new } => {
                let known = self.relation(relation)?;
                Some(Change::Insert {
                    relation: known.relation.clone(),
                    row: Self::cells(known, new)?,
                })
            }
            Message::Update {
                relation,
                old,
                old_is_full,
                new,
            } => {
                let known = self.relation(relation)?;
                let mut row = Self::cells(known, new)?;
                // A whole old row (REPLICA IDENTITY FULL) carries the large values the new
                // image leaves out as unchanged: the update arrives whole.
                let old_row = match (&old, old_is_full) {
                    (Some(old), true) => Some(Self::cells(known, old.clone())?),
                    _ => None,
                };
                if let Some(old_row) = old_row {
                    for (cell, old_cell) in row.iter_mut().zip(old_row) {
                        if matches!(cell, Cell::Unchanged) {
                            *cell = old_cell;
                        }
                    }
                }
                let old_key = old.map(|old| Self::key(known, old)).transpose()?;
                Some(Change::Update {
                    relation: known.relation.clone(),
                    old_key,
                    row,
                })
            }
            Message::Delete { relation, old } => {
                let known = self.relation(relation)?;
                Some(Change::Delete {
                    relation: known.relation.clone(),
                    key: Self::key(known, old)?,
                })
            }
            Message::Truncate {
                relations,
                cascade,
                restart_identity,
            } => {
                let relations = relations
                    .into_iter()
                    .map(|id| self.relation(id).map(|known| known.relation.clone()))
                    .collect::<Result<_>>()?;
                Some(Change::Truncate {
                    relations,
                    cascade,
                    restart_identity,
                })
            }
            Message::Origin { name } => {
                self.skipping = self.ignored_origins.contains(&name);
                None
            }
            Message::Skipped(_) => None,
        })
    }
}

#[async_trait]
impl ChangeStream for PostgresChangeStream {
    async fn next(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            let client = self
                .client
                .as_mut()
                .ok_or_else(|| Error::definite("stream.closed", "the stream is closed"))?;
            let silence_limit = self.silence_limit;
            // Measured from the last message, not from this call: the caller may drop an
            // unfinished call (to serve a timer) and call again, which must not restart the clock.
            let deadline = tokio::time::Instant::from_std(self.last_heard + silence_limit);
            let event = match tokio::time::timeout_at(deadline, client.recv()).await {
                Ok(event) => {
                    self.last_heard = std::time::Instant::now();
                    event
                        .map_err(|error| classify_replication(error, "reading the change stream"))?
                }
                Err(_) => {
                    return Err(Error::transient("stream.silent", format!("the source sent nothing, not even a keepalive, for {} s", silence_limit.as_secs()))
                        .with_hint("the network to the source is down or black-holed; ferry reconnects and resumes from the checkpoint (raise --network-timeout above the server's wal_sender_timeout / 2 if this repeats on a healthy network)"));
                }
            };
            let Some(event) = event else { return Ok(None) };
            match event {
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    return Ok(Some(StreamEvent::Idle {
                        position: Position::Postgres(Lsn(wal_end.0)),
                    }))
                }
                ReplicationEvent::Begin { final_lsn, .. } => {
                    self.skipping = false;
                    // A snapshot exact at S holds the transaction whose commit record starts
                    // before S (S is a record boundary): `final_lsn + 1 <= S`.
                    return Ok(Some(StreamEvent::Begin {
                        at: Some(Position::Postgres(Lsn(final_lsn.0 + 1))),
                    }));
                }
                ReplicationEvent::Commit {
                    end_lsn,
                    commit_time_micros,
                    ..
                } => {
                    return Ok(Some(StreamEvent::Commit {
                        position: Position::Postgres(Lsn(end_lsn.0)),
                        commit_time_unix_micros: commit_time_micros + POSTGRES_EPOCH_UNIX_MICROS,
                    }));
                }
                ReplicationEvent::XLogData { data, .. } => {
                    // Relation messages are decoded even in skipped transactions: later ones
                    // refer to them.
                    let change = self.decode(&data)?;
                    if let Some(relation) = self.schema_changed.take() {
                        return Ok(Some(StreamEvent::SchemaChanged { relation }));
                    }
                    if let Some(change) = change {
                        if !self.skipping {
                            return Ok(Some(StreamEvent::Change(change)));
                        }
                    }
                }
                // A fence marker: everything committed before the fence is behind us.
                ReplicationEvent::Message {
                    transactional: false,
                    lsn,
                    prefix,
                    ..
                } if prefix == FENCE_MESSAGE_PREFIX => {
                    return Ok(Some(StreamEvent::Fence {
                        position: Position::Postgres(Lsn(lsn.0)),
                    }));
                }
                ReplicationEvent::Message { .. } => {}
                ReplicationEvent::StoppedAt { .. } => return Ok(None),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }

    fn acknowledge(&mut self, position: Position) {
        let Position::Postgres(lsn) = position else {
            return;
        };
        if let Some(client) = &self.client {
            client.update_applied_lsn(pgwire_replication::Lsn(lsn.0));
        }
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        if let Some(mut client) = self.client.take() {
            // The last acknowledged position is sent with the status update on shutdown.
            let _ = client.shutdown().await;
        }
        Ok(())
    }
}
