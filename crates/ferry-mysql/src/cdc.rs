//! The MySQL/MariaDB change stream: row events from the binary log, as a replica reads them.
//!
//! - Positions are `(file number, offset)`; a transaction's position is the end of its commit
//!   (XID) event, where a resumed stream starts reading. Transactions that touch no selected
//!   table still advance the position (as `Idle`), so the checkpoint keeps up on a busy server.
//! - The server sends a heartbeat every second when idle; a connection silent for the network
//!   timeout counts as lost (transient).
//! - A binary log file that is gone (purged) is an operator error: changes are lost, and the
//!   tables must be copied again. Never silent.
//! - Rows are decoded with the column list of the catalog; a table whose column count changed
//!   (ALTER TABLE while streaming) stops the stream with an error rather than guess, and so does
//!   one whose logged column names or ENUM/SET labels differ (`binlog_row_metadata = FULL`), which
//!   catches events written before an ALTER made while ferry was stopped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::change::{CascadeOperation, Change, Relation, RelationColumn, StreamEvent};
use ferry_core::connector::ChangeStream;
use ferry_core::schema::{ForeignKey, TableName};
use ferry_core::select::Selection;
use ferry_core::{BinlogPosition, Cell, Error, Gtid, Position, Result, TableSchema, Value};
use futures_util::StreamExt;
use mysql_async::binlog::events::{EventData, OptionalMetadataField, RowsEventData, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use tracing::{info, warn};

use super::binlog::server_id_of;
use super::catalog::{kind_of, read_catalog_for};
use super::config::MysqlConfig;
use super::connection::{connect, is_mariadb};
use super::errors::classify;
use super::locks::{take_lock, HeldLock, STREAM_LOCK};
use super::types::Kind;
use super::values::decode;

/// A selected table as the stream decodes it.
struct Decoder {
    relation: Arc<Relation>,
    kinds: Vec<Kind>,
    /// The column types as the catalog read them (`decimal(10,2)`).
    native_types: Vec<String>,
    /// What else about each column an ALTER must not change unseen: collation, generated
    /// expression and kind, nullability, identity.
    traits: Vec<ColumnTraits>,
    key_indexes: Vec<usize>,
}

impl Decoder {
    /// The decoder of `table`'s rows, as relation `id`.
    fn new(id: u32, table: &TableSchema) -> Decoder {
        let relation = Arc::new(Relation {
            id,
            table: table.name.clone(),
            columns: table
                .columns
                .iter()
                .map(|column| RelationColumn {
                    type_signature: None,
                    name: column.name.clone(),
                    is_key: table.primary_key.contains(&column.name),
                })
                .collect(),
        });
        let key_indexes = relation.key_indexes();
        Decoder {
            relation,
            kinds: table.columns.iter().map(kind_of).collect(),
            native_types: table
                .columns
                .iter()
                .map(|column| column.native_type.clone())
                .collect(),
            traits: table.columns.iter().map(ColumnTraits::of).collect(),
            key_indexes,
        }
    }
}

/// The parts of a column definition besides its type that change what the rows hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ColumnTraits {
    collation: Option<String>,
    generated: Option<String>,
    generated_virtual: bool,
    nullable: bool,
    identity: bool,
}

impl ColumnTraits {
    fn of(column: &ferry_core::Column) -> ColumnTraits {
        ColumnTraits {
            collation: column.collation.clone(),
            generated: column.generated.clone(),
            generated_virtual: column.generated_virtual,
            nullable: column.nullable,
            identity: column.identity.is_some(),
        }
    }
}

/// A decoder for a table map whose logged columns (named in its metadata) are a subset of the
/// current definition's, keys included, each decoded with its current type: the rows of an
/// older definition, before columns were added. None when the map names no columns
/// (`binlog_row_metadata = MINIMAL`) or names one the current definition lacks.
fn older_decoder(table_map: &TableMapEvent<'_>, current: &Decoder) -> Option<Decoder> {
    let names: Vec<String> = table_map
        .iter_optional_meta()
        .find_map(|field| match field {
            Ok(OptionalMetadataField::ColumnName(names)) => Some(
                names
                    .iter_names()
                    .filter_map(|name| name.ok().map(|name| name.name().into_owned()))
                    .collect(),
            ),
            _ => None,
        })?;
    if names.len() != table_map.columns_count() as usize {
        return None;
    }
    let indexes: Vec<usize> = names
        .iter()
        .map(|name| {
            current
                .relation
                .columns
                .iter()
                .position(|column| column.name == *name)
        })
        .collect::<Option<_>>()?;
    let keys_logged = current.key_indexes.iter().all(|key| indexes.contains(key));
    if !keys_logged {
        return None;
    }
    let relation = Arc::new(Relation {
        id: current.relation.id,
        table: current.relation.table.clone(),
        columns: indexes
            .iter()
            .map(|index| current.relation.columns[*index].clone())
            .collect(),
    });
    let key_indexes = relation.key_indexes();
    Some(Decoder {
        relation,
        kinds: indexes
            .iter()
            .map(|index| current.kinds[*index].clone())
            .collect(),
        native_types: indexes
            .iter()
            .map(|index| current.native_types[*index].clone())
            .collect(),
        traits: indexes
            .iter()
            .map(|index| current.traits[*index].clone())
            .collect(),
        key_indexes,
    })
}

/// Refuses a table with a column the binary log decoder cannot read (a character set other
/// than the ones it knows), before any of its rows is decoded.
fn require_readable(table: &TableSchema) -> Result<()> {
    match super::values::unreadable_column(table) {
        None => Ok(()),
        Some((column, charset)) => Err(Error::operator(
            "source.unsupported_charset",
            format!("column {column} of {} is in character set {charset}, which cannot be read from the binary log yet", table.name),
        )
        .with_hint("convert the column to utf8mb4 (ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4) or leave the table out")),
    }
}

/// The key of a table name in the decoders (lower case where the server folds names).
fn key_of_table(name: &str, fold_case: bool) -> String {
    if fold_case {
        name.to_lowercase()
    } else {
        name.to_string()
    }
}

/// The replica server id ferry registers with: derived from the migration name, in a range
/// unlikely to clash with real replicas.
pub fn server_id(migration: &str) -> u32 {
    let mut hash: u32 = 2_166_136_261;
    for byte in migration.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(16_777_619);
    }
    0x4000_0000 | (hash & 0x3FFF_FFFF)
}

pub(super) struct BinlogChangeStream {
    stream: Option<BinlogStream>,
    file: u32,
    /// The connected server's `server_id`: positions name the server their file belongs to.
    server: u32,
    /// The GTID of the last transaction read (MariaDB), carried in positions while the source
    /// has a single replication domain.
    gtid: Option<Gtid>,
    single_domain: bool,
    /// The GTID of the event group being read (MariaDB), which becomes `gtid` only when the
    /// group ends: a position inside a group must not name it, or a resume by GTID would skip it.
    next_gtid: Option<Gtid>,
    /// Inside a MariaDB event group (from its GTID event to its end).
    in_group: bool,
    /// The group is one statement (DDL) that ends it.
    standalone: bool,
    database: String,
    /// The server folds table and database names to lower case (`lower_case_table_names`).
    fold_case: bool,
    tables: HashMap<String, Decoder>,
    /// Table map ids whose metadata matched the decoders (a changed table gets a new id).
    checked_maps: HashSet<u64>,
    /// Per table (decoder key), the columns dropped on the source while streaming: one added
    /// again under the same name holds new values in every row, which the log never carried.
    dropped_columns: HashMap<String, HashSet<String>>,
    pending: VecDeque<StreamEvent>,
    in_transaction: bool,
    network_timeout: std::time::Duration,
    /// When the server last sent anything (heartbeats included).
    last_heard: std::time::Instant,
    /// The foreign keys between streamed tables whose actions change rows: the server applies
    /// them without logging, so each deleted or re-keyed parent row travels with them.
    cascade_rules: Arc<Vec<ForeignKey>>,
    /// The migrations whose applier's transactions are left out (the other direction of a
    /// switch-over): each of them writes its checkpoint first in every transaction.
    ignored: HashSet<String>,
    /// Inside a transaction one of `ignored` wrote: its rows are left out until it commits.
    skipping: bool,
    /// Decoders of table maps with an older definition than the catalog's (rows logged before
    /// columns were added), by table map id.
    historical: HashMap<u64, Decoder>,
    /// Per table (decoder key): the map id of the older definition the engine was told of last
    /// (absent: the current definition is in force).
    announced: HashMap<String, u64>,
    /// A selected table altered on the source (and the position after its statement, when
    /// that is a point between transactions): its definition is read again before any later
    /// event is passed on.
    reload: Option<(String, Option<Position>, String)>,
    /// The transaction being read wrote ferry's fence row (`_ferry`.`fence`): its commit is
    /// where a cutover's drain waits, stored at once.
    fence_seen: bool,
    /// The stream's named lock on the source (see `switchover`), and when taking it was last
    /// tried while it is not held.
    liveness: Option<HeldLock>,
    liveness_tried: std::time::Instant,
    config: MysqlConfig,
    migration: String,
}

impl BinlogChangeStream {
    pub(crate) async fn open(
        config: &MysqlConfig,
        migration: &str,
        position: BinlogPosition,
        tables: &[TableSchema],
        ignore_writes_of: &[String],
    ) -> Result<BinlogChangeStream> {
        // Before reading anything: a table the stream could not decode stops it now, not at
        // its first change.
        for table in tables {
            require_readable(table)?;
        }
        let mut conn = connect(config, true).await?;
        let what = format!("opening the binary log of {}", config.describe());
        let mariadb = is_mariadb(&mut conn).await?;
        let server = server_id_of(&mut conn).await?;
        let fold_case = conn
            .query_first::<u32, _>("SELECT @@lower_case_table_names")
            .await
            .map_err(|error| classify(error, &what))?
            .unwrap_or(0)
            != 0;
        let single_domain = mariadb && {
            let list: Option<String> = conn
                .query_first("SELECT @@gtid_binlog_pos")
                .await
                .map_err(|error| classify(error, &what))?;
            !list.unwrap_or_default().contains(',')
        };
        // Another server than the checkpoint's (a failover): its file and offset mean nothing
        // here, the GTID names the same transaction on every server of the topology.
        let by_gtid = match (position.server, position.gtid) {
            (0, _) => None,
            (stored, _) if stored == server => None,
            (stored, Some(gtid)) if mariadb => {
                info!(from_server = stored, to_server = server, %gtid, "the source is another server than at the checkpoint; resuming by GTID");
                Some(gtid)
            }
            (stored, _) => {
                return Err(Error::operator(
                    "source.server_changed",
                    format!("the checkpoint is a binary log position of server {stored}, but the source is now server {server}; a file and offset mean nothing on another server"),
                )
                .with_hint("point ferry back at the original server, or copy the tables again with `ferry run --restart` (resuming on another server needs a MariaDB GTID with one replication domain)"))
            }
        };
        if mariadb {
            // Send MariaDB's own GTID events (instead of BEGIN) so positions carry GTIDs.
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(|error| classify(error, &what))?;
        }
        // Heartbeats every second while idle (nanoseconds), and checksums as the server writes them.
        conn.query_drop("SET @master_heartbeat_period = 1000000000")
            .await
            .map_err(|error| classify(error, &what))?;
        let stream = match by_gtid {
            Some(gtid) => {
                conn.query_drop(format!("SET @slave_connect_state = '{gtid}'"))
                    .await
                    .map_err(|error| classify(error, &what))?;
                let request = BinlogStreamRequest::new(server_id(migration)).with_pos(4);
                conn.get_binlog_stream(request)
                    .await
                    .map_err(|error| classify(error, &what))?
            }
            None => {
                let file_name = resume_file(&mut conn, &what, position).await?;
                let request = BinlogStreamRequest::new(server_id(migration))
                    .with_filename(file_name.as_bytes())
                    .with_pos(position.offset);
                conn.get_binlog_stream(request)
                    .await
                    .map_err(|error| classify(error, &what))?
            }
        };
        let decoders = tables
            .iter()
            .enumerate()
            .map(|(index, table)| {
                (
                    key_of_table(&table.name.name, fold_case),
                    Decoder::new(index as u32 + 1, table),
                )
            })
            .collect();
        let streamed: HashSet<&TableName> = tables.iter().map(|table| &table.name).collect();
        let cascade_rules: Vec<ForeignKey> = tables
            .iter()
            .flat_map(|table| table.foreign_keys.iter())
            .filter(|key| {
                (key.on_delete.changes_rows() || key.on_update.changes_rows())
                    && streamed.contains(&key.table)
                    && streamed.contains(&key.referenced_table)
            })
            .cloned()
            .collect();
        if !cascade_rules.is_empty() {
            info!(
                keys = cascade_rules.len(),
                "foreign-key actions the binary log leaves out are reproduced on the target"
            );
        }
        let liveness = hold_stream_lock(config, migration, 2).await;
        Ok(BinlogChangeStream {
            ignored: ignore_writes_of.iter().cloned().collect(),
            skipping: false,
            fence_seen: false,
            reload: None,
            historical: HashMap::new(),
            announced: HashMap::new(),
            liveness,
            liveness_tried: std::time::Instant::now(),
            config: config.clone(),
            migration: migration.to_string(),
            cascade_rules: Arc::new(cascade_rules),
            stream: Some(stream),
            file: position.file,
            database: config.database().to_string(),
            fold_case,
            checked_maps: HashSet::new(),
            dropped_columns: HashMap::new(),
            server,
            gtid: position.gtid,
            single_domain,
            next_gtid: None,
            in_group: false,
            standalone: false,
            tables: decoders,
            pending: VecDeque::new(),
            in_transaction: false,
            network_timeout: config.network_timeout(),
            last_heard: std::time::Instant::now(),
        })
    }

    /// Reads the definition of a selected table again after an `ALTER TABLE` on the source,
    /// decodes its rows by it from here on, and tells the engine (`SchemaChanged`), which
    /// brings the target to the new shape before any later change. The definition is today's:
    /// if the table changed again since this statement, the next rows' logged metadata differs
    /// from it and stops the stream (`source.schema_changed`), as for an ALTER made while ferry
    /// was stopped.
    async fn reload_table(&mut self, key: &str, statement: &str) -> Result<()> {
        let Some(current) = self.tables.get(key) else {
            return Ok(());
        };
        let (id, name) = (current.relation.id, current.relation.table.clone());
        let mut conn = connect(&self.config, true).await?;
        let selection = Selection::default().restricted_to(std::slice::from_ref(&name));
        let (catalog, materialized) = read_catalog_for(&mut conn, &self.config, &selection).await?;
        let _ = conn.disconnect().await;
        let table = catalog
            .tables
            .into_iter()
            .find(|table| table.name == name)
            .ok_or_else(|| {
                Error::operator(
                    "source.schema_changed",
                    format!("{name} was altered on the source and can no longer be read as a table"),
                )
                .with_hint("copy the tables again with `ferry run --restart` (leave the table out with --tables if it is gone)")
            })?;
        require_readable(&table)?;
        // A column that changed type would be written into the target's old type, which may
        // round it (a DECIMAL scale) or refuse it later: besides added, dropped and moved
        // columns, only widened types are followed (the target widens them too).
        let before = &self.tables[key];
        let key_before: Vec<&String> = before
            .key_indexes
            .iter()
            .map(|index| &before.relation.columns[*index].name)
            .collect();
        // (Compared as sets: the relation lists key columns in table order, the catalog in
        // the key's order.)
        let lower = |names: Vec<&String>| -> std::collections::BTreeSet<String> {
            names
                .into_iter()
                .map(|name| name.to_ascii_lowercase())
                .collect()
        };
        let key_now: Vec<&String> = table.primary_key.iter().collect();
        if !key_before.is_empty() && lower(key_before) != lower(key_now) {
            return Err(Error::operator(
                "source.schema_changed",
                format!("the primary key of {name} changed on the source while streaming"),
            )
            .with_hint("apply the same change on the target, then copy the table again: `ferry run --restart`"));
        }
        for column in &table.columns {
            let known = before
                .relation
                .columns
                .iter()
                .position(|known| known.name.eq_ignore_ascii_case(&column.name));
            if let Some(index) = known {
                // Everything else about the column stays as it was: a new collation, generated
                // expression, identity or nullability rewrites rows without logging them.
                if before.traits[index] != ColumnTraits::of(column) {
                    return Err(Error::operator(
                        "source.schema_changed",
                        format!(
                            "column {} of {name} changed on the source while streaming (its collation, generated expression, nullability or AUTO_INCREMENT)",
                            column.name
                        ),
                    )
                    .with_hint("apply the same change on the target, then copy the table again: `ferry run --restart`"));
                }
                if before.native_types[index] != column.native_type
                    && !super::widen::same_integer(&before.native_types[index], &column.native_type)
                    && !super::widen::widens(&before.native_types[index], &column.native_type)
                {
                    return Err(Error::operator(
                        "source.schema_changed",
                        format!(
                            "column {} of {name} changed type on the source while streaming ({} to {})",
                            column.name, before.native_types[index], column.native_type
                        ),
                    )
                    .with_hint("apply the same change on the target, then copy the table again: `ferry run --restart`"));
                }
            }
        }
        // A column dropped (in this statement or earlier in this run) and added again under the
        // same name holds new values in every row.
        let dropped_now: Vec<String> = before
            .relation
            .columns
            .iter()
            .filter(|known| {
                !table
                    .columns
                    .iter()
                    .any(|column| column.name.eq_ignore_ascii_case(&known.name))
            })
            .map(|known| known.name.to_ascii_lowercase())
            .collect();
        let dropped_here = dropped_columns(statement);
        // The columns this statement adds (named in it; the definition read now may already
        // have them when the ALTER was made while ferry was stopped).
        let added_here = added_columns(statement);
        let earlier = self.dropped_columns.get(key);
        if let Some(again) = table.columns.iter().find(|column| {
            let lower = column.name.to_ascii_lowercase();
            (dropped_here.contains(&lower)
                && added_here
                    .iter()
                    .any(|(added, _)| added.eq_ignore_ascii_case(&lower)))
                || earlier.is_some_and(|dropped| dropped.contains(&lower))
        }) {
            return Err(Error::operator(
                "source.schema_changed",
                format!(
                    "column {} of {name} was dropped and added again on the source: every row holds a new value the log never carried",
                    again.name
                ),
            )
            .with_hint("copy the table again: `ferry run --restart --tables ...`"));
        }
        self.dropped_columns
            .entry(key.to_string())
            .or_default()
            .extend(dropped_now);
        for (added, declared) in added_here {
            let Some(column) = table
                .columns
                .iter()
                .find(|column| column.name.eq_ignore_ascii_case(&added))
            else {
                continue;
            };
            // A generated column holds computed values in every existing row, which the log
            // never carries; a target that takes its values (not its expression) cannot follow.
            if materialized
                .iter()
                .any(|generated| generated.starts_with(&format!("{name}.{} ", column.name)))
            {
                return Err(Error::operator(
                    "source.schema_changed",
                    format!("generated column {} was added to {name} on the source: the target holds generated columns' values, not their expressions, and the existing rows' values were never logged", column.name),
                )
                .with_hint("copy the table again: `ferry run --restart --tables ...`"));
            }
            // Every existing row took the default the column was added with; the target adds it
            // with today's. Another one (changed since, while ferry was stopped) would differ.
            let normalize = |value: Option<&str>| {
                value
                    .map(|value| value.trim().trim_matches('\'').to_ascii_uppercase())
                    .filter(|value| value != "NULL")
            };
            if normalize(declared.as_deref()) != normalize(column.default.as_deref()) {
                return Err(Error::operator(
                    "source.schema_changed",
                    format!(
                        "column {} was added to {name} with default {} but has default {} now: the existing rows hold the first",
                        column.name,
                        declared.as_deref().unwrap_or("NULL"),
                        column.default.as_deref().unwrap_or("NULL")
                    ),
                )
                .with_hint("copy the table again: `ferry run --restart --tables ...`"));
            }
        }
        let decoder = Decoder::new(id, &table);
        let relation = decoder.relation.clone();
        self.checked_maps.clear();
        self.announced.remove(key);
        self.tables.insert(key.to_string(), decoder);
        info!(table = %name, columns = relation.columns.len(), "a selected table was altered on the source: following its new definition");
        self.pending
            .push_back(StreamEvent::SchemaChanged { relation });
        Ok(())
    }

    fn position(&self, offset: u32) -> Position {
        Position::Mysql(BinlogPosition {
            file: self.file,
            offset: u64::from(offset),
            server: self.server,
            gtid: self.gtid.filter(|_| self.single_domain),
        })
    }

    /// A transaction starts at the event ending at `offset`: a snapshot exact at S holds it if
    /// and only if that event ends at or before S (transactions never straddle S).
    fn begin(&mut self, offset: u32) {
        if !self.in_transaction {
            self.in_transaction = true;
            let at = (offset > 0).then(|| {
                Position::Mysql(BinlogPosition {
                    file: self.file,
                    offset: u64::from(offset),
                    server: self.server,
                    gtid: None,
                })
            });
            self.pending.push_back(StreamEvent::Begin { at });
        }
    }

    /// The current MariaDB event group is complete: positions may name its GTID.
    fn end_group(&mut self) {
        if self.in_group {
            self.gtid = self.next_gtid.or(self.gtid);
            self.in_group = false;
            self.standalone = false;
        }
    }

    fn commit(&mut self, offset: u32, timestamp: u32) {
        self.end_group();
        self.skipping = false;
        let position = self.position(offset);
        if std::mem::take(&mut self.fence_seen) && !self.in_transaction {
            self.pending.push_back(StreamEvent::Fence { position });
            return;
        }
        if self.in_transaction {
            self.in_transaction = false;
            self.pending.push_back(StreamEvent::Commit {
                position,
                commit_time_unix_micros: i64::from(timestamp) * 1_000_000,
            });
        } else {
            self.pending.push_back(StreamEvent::Idle { position });
        }
    }

    /// Turns one binary log event into stream events.
    fn handle(&mut self, event: mysql_async::binlog::events::Event) -> Result<()> {
        let header = event.header();
        match header.event_type_raw() {
            // XA PREPARE: the rows may still be rolled back; ferry cannot hold them apart yet.
            38 => {
                return Err(Error::operator(
                    "source.xa_transaction",
                    "the source logged an XA (two-phase) transaction on the binary log",
                )
                .with_hint("ferry does not stream XA transactions yet: avoid XA on the selected tables while migrating"))
            }
            // MariaDB's GTID event: the next transaction's id.
            162 => {
                // A group without a recognised end (a rolled-back one) is over when the next begins.
                self.end_group();
                self.skipping = false;
                self.fence_seen = false;
                if let Some(gtid) = mariadb_gtid(header.server_id(), event.data()) {
                    if self.gtid.is_some_and(|known| known.domain != gtid.domain) {
                        // Another replication domain: one GTID no longer names the position.
                        self.single_domain = false;
                    }
                    self.next_gtid = Some(gtid);
                    self.in_group = true;
                    self.standalone = event.data().get(12).is_some_and(|flags| flags & 1 == 1);
                }
                return Ok(());
            }
            // MariaDB's compressed query and row events.
            165..=171 => {
                return Err(Error::operator(
                    "source.binlog_setting",
                    "the source writes compressed binary log events",
                )
                .with_hint("set log_bin_compress=OFF on the source, then copy again with `ferry run --restart` (the compressed events cannot be read)"))
            }
            _ => {}
        }
        let data = event.read_data().map_err(|error| {
            Error::definite(
                "source.binlog_event",
                format!("a binary log event could not be decoded: {error}"),
            )
        })?;
        let commit_at = |offset: u32| -> Result<u32> {
            if offset == 0 {
                // Events unpacked from a MySQL transaction payload carry no position.
                return Err(Error::operator(
                    "source.binlog_setting",
                    "the source compresses binary log transactions (binlog_transaction_compression)",
                )
                .with_hint("set binlog_transaction_compression=OFF on the source"));
            }
            Ok(offset)
        };
        match data {
            Some(EventData::RotateEvent(rotate)) => {
                // A new file (after a server restart, map ids start over): check maps afresh.
                self.checked_maps.clear();
                self.historical.clear();
                self.announced.clear();
                if let Some(number) = BinlogPosition::file_number(&rotate.name()) {
                    self.file = number;
                }
            }
            Some(EventData::XidEvent(_)) => {
                self.commit(commit_at(header.log_pos())?, header.timestamp())
            }
            Some(EventData::QueryEvent(query)) => {
                let text = query.query();
                let statement = strip_comments(&text).to_ascii_uppercase();
                let words: Vec<&str> = statement.split_whitespace().take(3).collect();
                if statement.starts_with("BEGIN") || statement.starts_with("XA START") {
                    // Rows follow; Begin is emitted with the first change we keep.
                } else if statement.starts_with("ROLLBACK") && self.in_transaction {
                    // Logged only when a transaction also touched a non-transactional table:
                    // the selected tables' rows read since its start were undone on the source.
                    return Err(Error::operator(
                        "source.rolled_back_transaction",
                        format!("a transaction that changed a selected table was rolled back on the source after its rows were logged ({}), because it also changed a non-transactional table", text.chars().take(80).collect::<String>()),
                    )
                    .with_hint("keep non-transactional (MyISAM, Aria) tables out of transactions that write the selected tables, then copy again with `ferry run --restart`"));
                } else if statement.starts_with("COMMIT")
                    || statement.starts_with("XA COMMIT")
                    || statement.starts_with("ROLLBACK") && !statement.starts_with("ROLLBACK TO")
                {
                    self.commit(commit_at(header.log_pos())?, header.timestamp());
                } else if words.first() == Some(&"TRUNCATE") {
                    let reference = strip_comments(&text)
                        .split_whitespace()
                        .nth(if words.get(1) == Some(&"TABLE") { 2 } else { 1 })
                        .unwrap_or_default()
                        .to_string();
                    let relations: Vec<Arc<Relation>> = self
                        .resolve(&query.schema(), &reference)
                        .into_iter()
                        .collect();
                    if !relations.is_empty() {
                        self.begin(header.log_pos());
                        self.pending
                            .push_back(StreamEvent::Change(Change::Truncate {
                                relations,
                                cascade: false,
                                restart_identity: false,
                            }));
                    }
                    self.commit(commit_at(header.log_pos())?, header.timestamp());
                } else if let Some(table) = (!only_moves_auto_increment(&statement))
                    .then(|| self.altered_selected(&query.schema(), &text))
                    .flatten()
                {
                    // Followed: the definition is read again (see `next`), then the stream goes on.
                    if self.standalone {
                        self.end_group();
                    }
                    let at = (!self.in_transaction && !self.in_group && header.log_pos() > 0)
                        .then(|| self.position(header.log_pos()));
                    self.reload = Some((table, at, text.to_string()));
                } else if self.mentions_selected(&text) {
                    let ddl_on_selected =
                        is_table_ddl(&statement) && self.ddl_names_selected(&query.schema(), &text);
                    if ddl_on_selected || self.replaces_selected(&query.schema(), &text) {
                        return Err(Error::operator(
                            "source.schema_changed",
                            format!("a selected table's definition may have changed on the source while streaming: {}", text.chars().take(200).collect::<String>()),
                        )
                        .with_hint("apply the same change on the target, then copy the table again: `ferry run --restart` (ferry does not yet replay DDL)"));
                    }
                    if matches!(
                        words.first().copied(),
                        Some("INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD")
                    ) {
                        return Err(Error::operator(
                            "source.statement_logged",
                            format!("a change to a selected table was logged as a statement, not as rows: {}", text.chars().take(200).collect::<String>()),
                        )
                        .with_hint("set binlog_format=ROW for every session that writes the selected tables (a session-level binlog_format=STATEMENT or MIXED overrides the server's), then copy again with `ferry run --restart`"));
                    }
                    if self.standalone {
                        self.end_group();
                    }
                    if !self.in_transaction && !self.in_group {
                        self.pending.push_back(StreamEvent::Idle {
                            position: self.position(header.log_pos()),
                        });
                    }
                } else {
                    if self.standalone {
                        self.end_group();
                    }
                    if !self.in_transaction && !self.in_group && header.log_pos() > 0 {
                        self.pending.push_back(StreamEvent::Idle {
                            position: self.position(header.log_pos()),
                        });
                    }
                }
            }
            Some(EventData::HeartbeatEvent)
                if !self.in_transaction && !self.in_group && header.log_pos() > 0 =>
            {
                self.pending.push_back(StreamEvent::Idle {
                    position: self.position(header.log_pos()),
                });
            }
            Some(EventData::RowsEvent(rows)) => self.rows(&rows, header.log_pos())?,
            _ => {}
        }
        Ok(())
    }

    /// Whether a statement's text names a selected table at all (a cheap first test).
    fn mentions_selected(&self, text: &str) -> bool {
        let lower = text.to_ascii_lowercase();
        self.tables.keys().any(|name| {
            let name = name.to_ascii_lowercase();
            // A name outside [A-Za-z0-9_$] appears only quoted.
            lower.contains(&format!("`{}`", name.replace('`', "``")))
                || lower
                    .split(|character: char| {
                        !(character.is_alphanumeric() || character == '_' || character == '$')
                    })
                    .any(|word| word == name)
        })
    }

    /// Whether a database name from the log is the source database. With
    /// `lower_case_table_names` set, the server logs names in lower case whatever the URL says.
    fn same_database(&self, logged: &str) -> bool {
        if self.fold_case {
            logged.eq_ignore_ascii_case(&self.database)
        } else {
            logged == self.database
        }
    }

    /// The key of a table name in `tables` (lower case where the server folds names).
    fn table_key(&self, name: &str) -> String {
        key_of_table(name, self.fold_case)
    }

    /// The decoder key of the selected table an `ALTER [ONLINE|IGNORE] TABLE t ...` changes, when
    /// every clause of it is one ferry follows: adding columns, adding or dropping plain indexes,
    /// column defaults, comments, and how the server runs it (`ALGORITHM`, `LOCK`). Anything
    /// else (dropped, renamed or retyped columns, keys, foreign keys, partitions, tablespaces,
    /// character sets) changes rows without logging them or changes what the target must hold:
    /// that still stops the stream.
    fn altered_selected(&self, default_schema: &str, text: &str) -> Option<String> {
        let text = strip_comments(text);
        let (reference, rest) = altered_table(text)?;
        let relation = self.resolve(default_schema, reference)?;
        // The clauses: the text after the table reference, split at top-level commas.
        let clauses = split_clauses(rest);
        if clauses.is_empty() || !clauses.iter().all(|clause| followed_clause(clause)) {
            return None;
        }
        Some(self.table_key(&relation.table.name))
    }

    /// Whether a table DDL statement (ALTER, DROP, RENAME TABLE) names a selected table, its
    /// references resolved against the statement's default database: a same-named table of
    /// another database is not ours. True when the references cannot be read (it stops then).
    fn ddl_names_selected(&self, default_schema: &str, text: &str) -> bool {
        let words = sql_words(strip_comments(text));
        let upper: Vec<String> = words.iter().map(|word| word.to_ascii_uppercase()).collect();
        let mut references: Vec<String> = Vec::new();
        match upper.first().map(String::as_str) {
            // Every table an ALTER names: its own, and those of `EXCHANGE PARTITION ... WITH
            // TABLE t` or `CONVERT TABLE t TO PARTITION ...`.
            Some("ALTER") => {
                for (index, word) in upper.iter().enumerate() {
                    if word == "TABLE" {
                        let mut at = index + 1;
                        if upper.get(at).map(String::as_str) == Some("IF") {
                            at += 2;
                        }
                        if let Some(reference) = words.get(at) {
                            references
                                .push(reference.split('(').next().unwrap_or_default().to_string());
                        }
                    }
                }
            }
            Some("DROP") | Some("RENAME") => {
                let mut at = 1;
                while upper.get(at).is_some_and(|word| word == "TEMPORARY") {
                    at += 1;
                }
                at += 1;
                if upper.get(at).map(String::as_str) == Some("IF") {
                    at += 2;
                }
                for word in &words[at.min(words.len())..] {
                    for part in word.split(',') {
                        let part = part.trim().trim_end_matches(';');
                        let keyword = matches!(
                            part.to_ascii_uppercase().as_str(),
                            "TO" | "RESTRICT" | "CASCADE" | "WAIT" | "NOWAIT" | ""
                        );
                        if !keyword && !part.chars().all(|character| character.is_ascii_digit()) {
                            references.push(part.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
        // A name ferry cannot read (an unbalanced quote) counts as ours.
        references.is_empty()
            || references.iter().any(|reference| {
                reference.matches('`').count() % 2 == 1
                    || self.resolve(default_schema, reference).is_some()
            })
    }

    /// Whether a statement is MariaDB's `CREATE OR REPLACE [TEMPORARY] TABLE [IF NOT EXISTS] t`
    /// of a selected table (a drop and a create in one).
    fn replaces_selected(&self, default_schema: &str, text: &str) -> bool {
        let text = strip_comments(text);
        let words: Vec<&str> = text.split_whitespace().collect();
        let upper: Vec<String> = words.iter().map(|word| word.to_ascii_uppercase()).collect();
        if upper.len() < 5 || upper[..3] != ["CREATE", "OR", "REPLACE"] {
            return false;
        }
        let mut at = 3;
        if upper[at] == "TEMPORARY" {
            at += 1;
        }
        if upper.get(at).map(String::as_str) != Some("TABLE") {
            return false;
        }
        at += 1;
        if upper.get(at).map(String::as_str) == Some("IF") {
            at += 3;
        }
        words.get(at).is_some_and(|reference| {
            let reference = reference.split(['(', ' ']).next().unwrap_or_default();
            self.resolve(default_schema, reference).is_some()
        })
    }

    /// The selected table a reference (`t`, `` `t` ``, `db.t`) names, resolved against the
    /// statement's default database.
    fn resolve(&self, default_schema: &str, reference: &str) -> Option<Arc<Relation>> {
        let reference = reference.trim_end_matches(';');
        let parts: Vec<String> = reference
            .split('.')
            .map(|part| part.trim_matches('`').to_string())
            .collect();
        let (schema, table) = match parts.as_slice() {
            [table] => (default_schema.to_string(), table.clone()),
            [schema, table] => (schema.clone(), table.clone()),
            _ => return None,
        };
        self.same_database(&schema)
            .then(|| {
                self.tables
                    .get(&self.table_key(&table))
                    .map(|decoder| decoder.relation.clone())
            })
            .flatten()
    }

    fn rows(&mut self, rows: &RowsEventData<'_>, offset: u32) -> Result<()> {
        let stream = self.stream.as_ref().expect("open");
        let Some(table_map) = stream.get_tme(rows.table_id()) else {
            return Ok(());
        };
        if self.skipping {
            return Ok(());
        }
        if table_map.database_name() == "_ferry" && table_map.table_name() == "fence" {
            self.fence_seen = true;
            return Ok(());
        }
        if !self.ignored.is_empty()
            && table_map.database_name() == "_ferry"
            && table_map.table_name() == "streams"
        {
            let marked = rows.rows(table_map).any(|row| {
                row.ok()
                    .and_then(|(_, after)| after)
                    .and_then(|after| match after.as_ref(0) {
                        Some(BinlogValue::Value(mysql_async::Value::Bytes(name))) => Some(
                            self.ignored
                                .contains(String::from_utf8_lossy(name).as_ref()),
                        ),
                        _ => None,
                    })
                    .unwrap_or(false)
            });
            if marked {
                if self.in_transaction {
                    // ferry's applier stores its checkpoint first: rows before it are not its own.
                    warn!("a transaction of ferry's other direction did not start with its checkpoint; its rows are streamed");
                } else {
                    self.skipping = true;
                }
            }
            return Ok(());
        }
        if !self.same_database(&table_map.database_name()) {
            return Ok(());
        }
        let table_name = table_map.table_name().to_string();
        let key = self.table_key(&table_name);
        let Some(current) = self.tables.get(&key) else {
            return Ok(());
        };
        let table_id = table_map.table_id();
        // A relation the engine must learn of before these rows: an older definition's.
        let mut announce: Option<Arc<Relation>> = None;
        // A map id names one table until the server restarts (a new file): an older decoder
        // of another table under this id is stale.
        if self
            .historical
            .get(&table_id)
            .is_some_and(|older| older.relation.table != current.relation.table)
        {
            self.historical.remove(&table_id);
        }
        if !self.checked_maps.contains(&table_id) && !self.historical.contains_key(&table_id) {
            let difference = if table_map.columns_count() as usize != current.kinds.len() {
                Some(format!(
                    "it has {} columns in the binary log but {} when streaming began",
                    table_map.columns_count(),
                    current.kinds.len()
                ))
            } else {
                metadata_difference(table_map, current)
            };
            match difference {
                None => {
                    self.checked_maps.insert(table_id);
                }
                Some(difference) => {
                    // Rows logged before columns were added (an ALTER ... ADD COLUMN made while
                    // ferry was stopped, further on in the log): decoded by the columns they
                    // have, each with the type it still has now. Anything else stops.
                    let older = older_decoder(table_map, current)
                        .filter(|older| metadata_difference(table_map, older).is_none());
                    let Some(older) = older else {
                        return Err(Error::operator(
                            "source.schema_changed",
                            format!("{}.{table_name} changed since streaming began: {difference}", self.database),
                        )
                        .with_hint("apply the same change on the target, then copy the table again: `ferry run --restart`"));
                    };
                    info!(table = %older.relation.table, columns = older.relation.columns.len(), "rows logged before columns were added: decoding them by the columns they have");
                    announce = Some(older.relation.clone());
                    self.historical.insert(table_id, older);
                }
            }
        }
        let decoder = self.historical.get(&table_id).unwrap_or(current);
        let uses_older = self.historical.contains_key(&table_id);
        if uses_older && self.announced.get(&key) != Some(&table_id) {
            // An older definition than the one the engine was told of last for this table.
            announce = Some(decoder.relation.clone());
        }
        // A session with foreign_key_checks = 0 changed these rows: the server took no
        // foreign-key action, so none is reproduced.
        let keys_checked = !rows
            .flags()
            .contains(mysql_async::binlog::RowsEventFlags::NO_FOREIGN_KEY_CHECKS);
        let mut changes = Vec::new();
        let read = super::images::images(rows, table_map).map_err(|error| {
            Error::definite(
                "source.binlog_event",
                format!("a row event of {table_name} could not be decoded: {error}"),
            )
        })?;
        for (before, after) in read {
            let before = before
                .map(|values| decode_image(decoder, values, &table_name))
                .transpose()?;
            let after = after
                .map(|values| decode_image(decoder, values, &table_name))
                .transpose()?;
            // A table without a key is identified by its whole image.
            let key_of = |image: &Vec<Value>| {
                if decoder.key_indexes.is_empty() {
                    return image.clone();
                }
                decoder
                    .key_indexes
                    .iter()
                    .map(|index| image[*index].clone())
                    .collect::<Vec<_>>()
            };
            let relation = decoder.relation.clone();
            // Foreign-key actions of this row's change, which the log does not carry.
            let cascade = match (&before, &after) {
                (Some(before), after) if keys_checked => {
                    let referenced = |row: &Vec<Value>, columns: &[String]| -> Vec<Value> {
                        columns
                            .iter()
                            .filter_map(|column| {
                                relation
                                    .columns
                                    .iter()
                                    .position(|known| known.name == *column)
                                    .map(|index| row[index].clone())
                            })
                            .collect()
                    };
                    let acts = self.cascade_rules.iter().any(|rule| {
                        rule.referenced_table == relation.table
                            && match after {
                                None => rule.on_delete.changes_rows(),
                                Some(after) => {
                                    rule.on_update.changes_rows()
                                        && referenced(before, &rule.referenced_columns)
                                            != referenced(after, &rule.referenced_columns)
                                }
                            }
                    });
                    acts.then(|| {
                        Change::Cascade(Arc::new(CascadeOperation {
                            relation: relation.clone(),
                            old: before.clone(),
                            new: after.clone(),
                            rules: self.cascade_rules.clone(),
                        }))
                    })
                }
                _ => None,
            };
            changes.push(match (before, after) {
                (None, Some(after)) => Change::Insert {
                    relation,
                    row: after.into_iter().map(Cell::Value).collect(),
                },
                (Some(before), Some(after)) => {
                    let old_key = key_of(&before);
                    let moved = decoder.key_indexes.is_empty() || old_key != key_of(&after);
                    Change::Update {
                        relation,
                        old_key: moved.then_some(old_key),
                        row: after.into_iter().map(Cell::Value).collect(),
                    }
                }
                (Some(before), None) => Change::Delete {
                    relation,
                    key: key_of(&before),
                },
                (None, None) => continue,
            });
            changes.extend(cascade);
        }
        if !changes.is_empty() {
            self.begin(offset);
            // The engine learns which columns the rows have whenever that changes.
            if let Some(relation) = announce {
                self.pending
                    .push_back(StreamEvent::SchemaChanged { relation });
                self.announced.insert(key.clone(), table_id);
            } else if !uses_older && self.announced.remove(&key).is_some() {
                // Back to the current definition.
                self.pending.push_back(StreamEvent::SchemaChanged {
                    relation: self.tables[&key].relation.clone(),
                });
            }
            self.pending
                .extend(changes.into_iter().map(StreamEvent::Change));
        }
        Ok(())
    }
}

/// Takes the stream's named lock on the source, so controllers can tell that this migration is
/// being streamed (`MysqlControl::stream_active`). Best effort: a lock still held by a
/// predecessor's vanishing session is taken later (see `next`).
async fn hold_stream_lock(
    config: &MysqlConfig,
    migration: &str,
    wait_seconds: u32,
) -> Option<HeldLock> {
    match take_lock(config, STREAM_LOCK, migration, wait_seconds).await {
        Ok(Some(held)) => Some(held),
        Ok(None) => {
            warn!(
                migration,
                "another session holds this stream's lock on the source; taking it once it is free"
            );
            None
        }
        Err(error) => {
            warn!(code = error.code(), error = %error, "cannot take this stream's lock on the source; trying again later");
            None
        }
    }
}

/// The name of the binary log file numbered `position.file`, or the purged-log error.
async fn resume_file(
    conn: &mut mysql_async::Conn,
    what: &str,
    position: BinlogPosition,
) -> Result<String> {
    let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.map_err(|error| {
        classify(error, what)
            .with_hint("grant REPLICATION CLIENT (or BINLOG MONITOR on MariaDB) to ferry's user")
    })?;
    let names: Vec<String> = logs
        .iter()
        .filter_map(|row| row.get::<String, _>(0))
        .collect();
    names
        .iter()
        .find(|name| BinlogPosition::file_number(name) == Some(position.file))
        .cloned()
        .ok_or_else(|| {
            Error::operator(
                "source.log_purged",
                format!(
                    "the binary log file number {} that the stream must resume from is gone from the source (oldest kept: {})",
                    position.file,
                    names.first().map(String::as_str).unwrap_or("none")
                ),
            )
            .with_hint("changes made since the checkpoint are lost: keep binary logs longer (binlog_expire_logs_seconds / expire_logs_days) and copy the tables again with `ferry run --restart`")
        })
}

/// The MariaDB GTID event's transaction id (payload: sequence number, domain, flags).
fn mariadb_gtid(server: u32, data: &[u8]) -> Option<Gtid> {
    Some(Gtid {
        sequence: u64::from_le_bytes(data.get(0..8)?.try_into().ok()?),
        domain: u32::from_le_bytes(data.get(8..12)?.try_into().ok()?),
        server,
    })
}

/// How a table map's optional metadata (column names, ENUM and SET labels: logged with
/// `binlog_row_metadata = FULL`) differs from the columns the stream decodes with, if it does.
/// Catches the changes that would otherwise decode silently wrong, from events written before an
/// `ALTER` made while ferry was stopped: reordered or renamed columns, reordered labels.
/// Labels that are not ASCII are compared by count only (they are logged in the column's
/// character set).
fn metadata_difference(table_map: &TableMapEvent<'_>, decoder: &Decoder) -> Option<String> {
    if let Some(difference) = type_difference(table_map, decoder) {
        return Some(difference);
    }
    let expected = |pick: fn(&Kind) -> Option<&Vec<String>>| -> Vec<&Vec<String>> {
        decoder.kinds.iter().filter_map(pick).collect()
    };
    let enums = expected(|kind| match kind {
        Kind::Enum { labels } => Some(labels),
        _ => None,
    });
    let sets = expected(|kind| match kind {
        Kind::Set { labels } => Some(labels),
        _ => None,
    });
    let same_lists = |logged: Vec<Vec<String>>, known: &[&Vec<String>]| {
        logged.len() == known.len()
            && logged.iter().zip(known).all(|(logged, known)| {
                logged.len() == known.len()
                    && logged.iter().zip(known.iter()).all(|(logged, known)| {
                        logged == known || !logged.is_ascii() || !known.is_ascii()
                    })
            })
    };
    for field in table_map.iter_optional_meta() {
        match field {
            Ok(OptionalMetadataField::ColumnName(names)) => {
                let logged: Vec<String> = names
                    .iter_names()
                    .filter_map(|name| name.ok().map(|name| name.name().into_owned()))
                    .collect();
                let known: Vec<&str> = decoder
                    .relation
                    .columns
                    .iter()
                    .map(|column| column.name.as_str())
                    .collect();
                if logged != known {
                    return Some(format!(
                        "its columns are ({}) in the binary log, ({}) when streaming began",
                        logged.join(", "),
                        known.join(", ")
                    ));
                }
            }
            Ok(OptionalMetadataField::EnumStrValue(values)) => {
                let logged = values
                    .iter_values()
                    .filter_map(|column| column.ok())
                    .map(|column| {
                        column
                            .values()
                            .iter()
                            .map(|value| value.value().into_owned())
                            .collect()
                    });
                if !same_lists(logged.collect(), &enums) {
                    return Some("its ENUM labels differ from when streaming began".into());
                }
            }
            Ok(OptionalMetadataField::SetStrValue(values)) => {
                let logged = values
                    .iter_values()
                    .filter_map(|column| column.ok())
                    .map(|column| {
                        column
                            .values()
                            .iter()
                            .map(|value| value.value().into_owned())
                            .collect()
                    });
                if !same_lists(logged.collect(), &sets) {
                    return Some("its SET labels differ from when streaming began".into());
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether a column's logged type is not the one the stream decodes with (an `ALTER ... MODIFY`
/// made while ferry was stopped, or missed in the log): numbers, decimals (with their precision
/// and scale, which fix the byte layout) and temporal types. Decoding such a column with the old
/// type would read wrong values without an error.
fn type_difference(table_map: &TableMapEvent<'_>, decoder: &Decoder) -> Option<String> {
    use mysql_async::consts::ColumnType as T;
    for (index, kind) in decoder.kinds.iter().enumerate() {
        let Ok(Some(logged)) = table_map.get_column_type(index) else {
            continue;
        };
        let expected: &[T] = match kind {
            Kind::Integer { bits: 8, .. } => &[T::MYSQL_TYPE_TINY],
            Kind::Integer { bits: 16, .. } => &[T::MYSQL_TYPE_SHORT],
            Kind::Integer { bits: 24, .. } => &[T::MYSQL_TYPE_INT24],
            Kind::Integer { bits: 32, .. } => &[T::MYSQL_TYPE_LONG],
            Kind::Integer { .. } => &[T::MYSQL_TYPE_LONGLONG],
            Kind::Float => &[T::MYSQL_TYPE_FLOAT],
            Kind::Double => &[T::MYSQL_TYPE_DOUBLE],
            Kind::Decimal => &[T::MYSQL_TYPE_NEWDECIMAL],
            Kind::Date => &[T::MYSQL_TYPE_DATE, T::MYSQL_TYPE_NEWDATE],
            Kind::DateTime => &[T::MYSQL_TYPE_DATETIME, T::MYSQL_TYPE_DATETIME2],
            Kind::Timestamp => &[T::MYSQL_TYPE_TIMESTAMP, T::MYSQL_TYPE_TIMESTAMP2],
            Kind::Time => &[T::MYSQL_TYPE_TIME, T::MYSQL_TYPE_TIME2],
            Kind::Year => &[T::MYSQL_TYPE_YEAR],
            Kind::Bit { .. } => &[T::MYSQL_TYPE_BIT],
            _ => continue,
        };
        let column = &decoder.relation.columns[index].name;
        if !expected.contains(&logged) {
            return Some(format!(
                "column {column} is logged as {logged:?}, but was {} when streaming began",
                decoder.native_types[index]
            ));
        }
        if matches!(kind, Kind::Decimal) {
            let logged_size = table_map
                .get_column_metadata(index)
                .filter(|meta| meta.len() >= 2)
                .map(|meta| (meta[0], meta[1]));
            let known_size =
                ferry_sql::syntax::modifier(&decoder.native_types[index]).and_then(|inside| {
                    let (precision, scale) = inside.split_once(',').unwrap_or((inside, "0"));
                    Some((
                        precision.trim().parse::<u32>().ok()?,
                        scale.trim().parse::<u32>().ok()?,
                    ))
                });
            if let (Some(logged_size), Some(known_size)) = (logged_size, known_size) {
                if (u32::from(logged_size.0), u32::from(logged_size.1)) != known_size {
                    return Some(format!(
                        "column {column} is logged as DECIMAL({},{}), but was {} when streaming began",
                        logged_size.0, logged_size.1, decoder.native_types[index]
                    ));
                }
            }
        }
    }
    None
}

/// The statement without leading comments and whitespace.
fn strip_comments(text: &str) -> &str {
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("/*") {
            match after.find("*/") {
                Some(end) => rest = after[end + 2..].trim_start(),
                None => return "",
            }
        } else if rest.starts_with("--") || rest.starts_with('#') {
            match rest.find('\n') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => return "",
            }
        } else {
            return rest;
        }
    }
}

/// Whether a statement changes or removes a table (procedures, views, triggers and indexes
/// created elsewhere that merely mention a table do not).
fn is_table_ddl(statement: &str) -> bool {
    let words: Vec<&str> = statement.split_whitespace().take(4).collect();
    !only_moves_auto_increment(statement)
        && matches!(
            words.as_slice(),
            ["ALTER", "TABLE", ..]
                | ["ALTER", "IGNORE", "TABLE", ..]
                | ["ALTER", "ONLINE", "TABLE", ..]
                | ["DROP", "TABLE", ..]
                | ["DROP", "TABLES", ..]
                | ["DROP", "TEMPORARY", ..]
                | ["RENAME", "TABLE", ..]
                | ["RENAME", "TABLES", ..]
        )
}

/// The words of a statement, split at whitespace outside quotes and backquotes (a quoted name
/// or string stays one word, quotes included).
fn sql_words(text: &str) -> Vec<String> {
    sql_word_spans(text)
        .into_iter()
        .map(|(start, end)| text[start..end].to_string())
        .collect()
}

/// Where each of [`sql_words`]'s words stands in `text` (byte ranges).
fn sql_word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    let mut quote: Option<char> = None;
    for (at, character) in text.char_indices() {
        match quote {
            Some(open) if character == open => quote = None,
            Some(_) => {}
            None if matches!(character, '\'' | '"' | '`') => quote = Some(character),
            None if character.is_whitespace() => {
                if let Some(begun) = start.take() {
                    spans.push((begun, at));
                }
                continue;
            }
            None => {}
        }
        start.get_or_insert(at);
    }
    if let Some(begun) = start {
        spans.push((begun, text.len()));
    }
    spans
}

/// The table reference of `ALTER [ONLINE | IGNORE] TABLE [IF EXISTS] name ...` and the text
/// after it (its clauses); None for another statement.
fn altered_table(text: &str) -> Option<(&str, &str)> {
    let spans = sql_word_spans(text);
    let upper = |at: usize| {
        spans
            .get(at)
            .map(|&(start, end)| text[start..end].to_ascii_uppercase())
    };
    if upper(0).as_deref() != Some("ALTER") {
        return None;
    }
    let mut at = 1;
    if matches!(upper(at).as_deref(), Some("ONLINE" | "IGNORE")) {
        at += 1;
    }
    if upper(at).as_deref() != Some("TABLE") {
        return None;
    }
    at += 1;
    if upper(at).as_deref() == Some("IF") {
        at += 2;
    }
    let &(start, end) = spans.get(at)?;
    let reference = text[start..end].split('(').next().unwrap_or_default();
    Some((reference, &text[end..]))
}

/// The columns an `ALTER TABLE` adds one by one (`ADD [COLUMN] [IF NOT EXISTS] name ...`), each
/// with the default it declares (None: none). A list `ADD (a ..., b ...)` is not read.
fn added_columns(statement: &str) -> Vec<(String, Option<String>)> {
    let mut added = Vec::new();
    for clause in split_top_level(statement) {
        let words = sql_words(&clause);
        let Some(add) = words
            .iter()
            .position(|word| word.eq_ignore_ascii_case("ADD"))
        else {
            continue;
        };
        let mut at = add + 1;
        if words
            .get(at)
            .is_some_and(|word| word.eq_ignore_ascii_case("COLUMN"))
        {
            at += 1;
        }
        if words
            .get(at)
            .is_some_and(|word| word.eq_ignore_ascii_case("IF"))
        {
            at += 3;
        }
        let Some(name) = words.get(at) else {
            continue;
        };
        let keyword = matches!(
            name.to_ascii_uppercase().as_str(),
            "INDEX"
                | "KEY"
                | "FULLTEXT"
                | "SPATIAL"
                | "UNIQUE"
                | "PRIMARY"
                | "CONSTRAINT"
                | "FOREIGN"
                | "CHECK"
                | "PARTITION"
        );
        if keyword || name.starts_with('(') {
            continue;
        }
        let default = words
            .iter()
            .position(|word| word.eq_ignore_ascii_case("DEFAULT"))
            .and_then(|index| words.get(index + 1))
            .map(|value| value.trim_end_matches(';').to_string());
        added.push((name.trim_matches('`').to_string(), default));
    }
    added
}

/// The columns an `ALTER TABLE` drops (`DROP [COLUMN] [IF EXISTS] name`), lower case.
fn dropped_columns(statement: &str) -> Vec<String> {
    let Some((_, rest)) = altered_table(strip_comments(statement)) else {
        return Vec::new();
    };
    split_top_level(rest)
        .iter()
        .filter_map(|clause| {
            let words: Vec<&str> = clause.split_whitespace().collect();
            let upper: Vec<String> = words.iter().map(|word| word.to_ascii_uppercase()).collect();
            if upper.first().map(String::as_str) != Some("DROP") {
                return None;
            }
            let mut at = 1;
            if upper.get(at).map(String::as_str) == Some("COLUMN") {
                at += 1;
            } else if upper.get(at).is_some_and(|word| {
                matches!(
                    word.as_str(),
                    "INDEX"
                        | "KEY"
                        | "PRIMARY"
                        | "FOREIGN"
                        | "CONSTRAINT"
                        | "CHECK"
                        | "PARTITION"
                        | "PERIOD"
                        | "SYSTEM"
                        | "UNIQUE"
                        | "FULLTEXT"
                        | "SPATIAL"
                )
            }) {
                return None;
            }
            if upper.get(at).map(String::as_str) == Some("IF") {
                at += 2;
            }
            words
                .get(at)
                .map(|name| name.trim_matches('`').to_ascii_lowercase())
        })
        .collect()
}

/// The clauses of an ALTER TABLE after its table name, split at commas outside parentheses and
/// quotes, trimmed.
fn split_top_level(text: &str) -> Vec<String> {
    let mut clauses = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for character in text.chars() {
        match (quote, character) {
            (Some(open), _) if character == open => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`') => quote = Some(character),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                clauses.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(character);
    }
    clauses.push(current);
    clauses
        .into_iter()
        .map(|clause| clause.trim().trim_end_matches(';').trim().to_string())
        .filter(|clause| !clause.is_empty())
        .collect()
}

/// [`split_top_level`], upper case.
fn split_clauses(text: &str) -> Vec<String> {
    split_top_level(text)
        .into_iter()
        .map(|clause| clause.to_ascii_uppercase())
        .collect()
}

/// Whether ferry follows one clause of an ALTER TABLE (see `altered_selected`).
fn followed_clause(clause: &str) -> bool {
    let words: Vec<&str> = clause.split_whitespace().collect();
    match words.as_slice() {
        ["ADD", "COLUMN", ..] => true,
        ["ADD", "INDEX" | "KEY" | "FULLTEXT" | "SPATIAL", ..] => true,
        ["ADD", "UNIQUE", ..] | ["ADD", "PRIMARY", ..] | ["ADD", "CONSTRAINT", ..] => false,
        ["ADD", "FOREIGN" | "CHECK" | "PARTITION" | "PERIOD" | "SYSTEM", ..] => false,
        // `ADD c INT` or `ADD (c INT, d INT)`.
        ["ADD", _, ..] => true,
        ["DROP", "INDEX" | "KEY", ..] => true,
        // A dropped column: rows logged from now on lack it (a key column stops the stream
        // when the definition is read again).
        ["DROP", "COLUMN", ..] => true,
        ["DROP", "PRIMARY" | "FOREIGN" | "CONSTRAINT" | "CHECK" | "PARTITION" | "PERIOD" | "SYSTEM"
        | "UNIQUE" | "FULLTEXT" | "SPATIAL", ..] => false,
        ["DROP", _, ..] => true,
        // A retyped column: followed when the new type is a widening (checked when the
        // definition is read again).
        ["MODIFY", ..] => true,
        ["CHANGE", "COLUMN", old, new, ..] | ["CHANGE", old, new, ..]
            if old.trim_matches('`') == new.trim_matches('`') && *old != "COLUMN" =>
        {
            true
        }
        ["ALTER", "COLUMN", _, "SET" | "DROP", "DEFAULT", ..] => true,
        ["ALTER", _, "SET" | "DROP", "DEFAULT", ..] if !matches!(words[1], "INDEX") => true,
        [first, ..]
            if ["COMMENT", "ALGORITHM", "LOCK"].iter().any(|option| {
                first
                    .strip_prefix(option)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('='))
            }) =>
        {
            true
        }
        _ => false,
    }
}

/// Whether a statement is `ALTER TABLE t AUTO_INCREMENT = n` and nothing else: it changes no
/// column (ferry's own sequence sync writes it on a MySQL target that is also a source).
fn only_moves_auto_increment(statement: &str) -> bool {
    let words: Vec<&str> = statement.split_whitespace().collect();
    if words.len() < 4 || words[0] != "ALTER" || words[1] != "TABLE" {
        return false;
    }
    let rest: String = words[3..].concat();
    rest.trim_end_matches(';')
        .strip_prefix("AUTO_INCREMENT")
        .map(|value| value.trim_start_matches('='))
        .is_some_and(|value| !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()))
}

fn decode_image(
    decoder: &Decoder,
    values: Vec<BinlogValue<'static>>,
    table: &str,
) -> Result<Vec<Value>> {
    if values.len() != decoder.kinds.len() {
        return Err(Error::operator(
            "source.row_image",
            format!("a row image of {table} lacks columns: the source must log full row images"),
        )
        .with_hint("set binlog_row_image=FULL on the source"));
    }
    values
        .into_iter()
        .zip(&decoder.kinds)
        .map(|(value, kind)| match value {
            BinlogValue::Value(raw) => decode(kind, raw, true),
            BinlogValue::Jsonb(json) => serde_json::Value::try_from(json)
                .map(|json| Value::Json(json.to_string()))
                .map_err(|error| {
                    Error::definite(
                        "source.bad_value",
                        format!("a JSON value of {table} could not be read: {error}"),
                    )
                }),
            BinlogValue::JsonDiff(_) => Err(Error::operator(
                "source.row_image",
                format!("{table}: partial JSON updates are logged"),
            )
            .with_hint("set binlog_row_value_options='' on the source")),
        })
        .collect::<Result<Vec<_>>>()
        .map_err(|error| error.context(format!("streaming {table}")))
}

#[async_trait]
impl ChangeStream for BinlogChangeStream {
    async fn next(&mut self) -> Result<Option<StreamEvent>> {
        if !self.liveness.as_ref().is_some_and(HeldLock::is_alive)
            && self.liveness_tried.elapsed() > std::time::Duration::from_secs(10)
        {
            self.liveness_tried = std::time::Instant::now();
            self.liveness = hold_stream_lock(&self.config, &self.migration, 0).await;
        }
        loop {
            // Kept until done: a call dropped while reading the definition redoes it.
            if let Some((table, at, statement)) = self.reload.clone() {
                self.reload_table(&table, &statement).await?;
                self.reload = None;
                if let Some(position) = at {
                    self.pending.push_back(StreamEvent::Idle { position });
                }
            }
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let stream = self.stream.as_mut().ok_or_else(|| {
                Error::transient("stream.closed", "the binary log stream is closed")
            })?;
            // Measured from the last event, not from this call: the caller may drop an
            // unfinished call (to serve a timer) and call again, which must not restart the clock.
            let deadline = tokio::time::Instant::from_std(self.last_heard + self.network_timeout);
            let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(next) => {
                    self.last_heard = std::time::Instant::now();
                    next
                }
                Err(_) => {
                    return Err(Error::transient(
                        "source.silent",
                        format!(
                            "the source sent nothing (not even a heartbeat) for {} s",
                            self.network_timeout.as_secs()
                        ),
                    ))
                }
            };
            match next {
                Some(Ok(event)) => self.handle(event)?,
                Some(Err(error)) => return Err(classify(error, "reading the binary log")),
                None => return Ok(None),
            }
        }
    }

    fn acknowledge(&mut self, _position: Position) {
        // The binary log is kept by time, not by replica acknowledgement: nothing to tell.
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        if let Some(stream) = self.stream.take() {
            let _ = stream.close().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_table_ddl_stops_the_stream() {
        assert!(super::is_table_ddl("ALTER TABLE `T` ADD COLUMN X INT"));
        assert!(super::is_table_ddl("DROP TABLE IF EXISTS T"));
        assert!(!super::is_table_ddl(
            "CREATE PROCEDURE P() BEGIN UPDATE T SET A = 1; END"
        ));
        assert!(!super::is_table_ddl("CREATE INDEX I ON T (A)"));
        assert!(!super::is_table_ddl("ALTER TABLE `T` AUTO_INCREMENT = 42"));
        assert!(!super::is_table_ddl("ALTER TABLE T AUTO_INCREMENT=42;"));
        assert!(super::is_table_ddl(
            "ALTER TABLE T AUTO_INCREMENT = 42, ADD COLUMN X INT"
        ));
        assert_eq!(
            super::strip_comments("/* m 42 */ -- x\n ALTER TABLE t"),
            "ALTER TABLE t"
        );
    }

    #[test]
    fn dropped_columns_are_named() {
        assert_eq!(
            super::dropped_columns("ALTER TABLE t DROP COLUMN a, DROP `b`, DROP INDEX i, DROP COLUMN IF EXISTS c, DROP PRIMARY KEY, ADD d INT"),
            vec!["a", "b", "c"]
        );
        assert!(super::dropped_columns("ALTER TABLE t ADD COLUMN a INT").is_empty());
    }

    #[test]
    fn only_column_and_index_additions_are_followed() {
        let followed = |text: &str| {
            super::split_clauses(text)
                .iter()
                .all(|clause| super::followed_clause(clause))
        };
        assert!(followed(
            " ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'a,b', ADD weight DECIMAL(8,3) AFTER id"
        ));
        assert!(followed(
            " ADD (a INT, b INT), ADD INDEX by_a (a), DROP INDEX old, ALGORITHM=INPLACE"
        ));
        assert!(followed(" ALTER COLUMN note SET DEFAULT 'x', COMMENT 'c'"));
        // Dropped and retyped columns are read again (a narrowed type or a key column still
        // stops there; a drop and an add together look like a rename to the engine).
        assert!(followed(" DROP COLUMN note"));
        assert!(followed(" DROP note, MODIFY qty BIGINT NOT NULL"));
        assert!(followed(" CHANGE qty qty BIGINT"));
        assert!(followed(" CHANGE COLUMN `qty` `qty` BIGINT"));
        assert!(followed(" ADD COLUMN x INT, DROP COLUMN y"));
        for stopped in [
            " CHANGE qty amount INT",
            " CHANGE COLUMN qty amount INT",
            " DROP PRIMARY KEY",
            " DROP FOREIGN KEY fk",
            " DROP CONSTRAINT c",
            " DROP CHECK c",
            " RENAME COLUMN a TO b",
            " ADD FOREIGN KEY (a) REFERENCES p (id) ON DELETE CASCADE",
            " ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES p (id)",
            " DROP PARTITION p2020",
            " TRUNCATE PARTITION p1",
            " EXCHANGE PARTITION p1 WITH TABLE t2",
            " DISCARD TABLESPACE",
            " CONVERT TO CHARACTER SET latin1",
            " ADD PRIMARY KEY (a)",
            " ADD UNIQUE KEY u (a)",
            " ENGINE=MyISAM",
        ] {
            assert!(!followed(stopped), "{stopped}");
        }
        // The clauses start right after the table's name, wherever its letters appear before.
        assert_eq!(
            super::altered_table("alter table t add column x int"),
            Some(("t", " add column x int"))
        );
        assert_eq!(
            super::altered_table("ALTER IGNORE TABLE IF EXISTS `odd name` ADD y INT"),
            Some(("`odd name`", " ADD y INT"))
        );
        assert_eq!(super::altered_table("DROP TABLE t"), None);
        assert_eq!(
            super::sql_words("ALTER TABLE `a b` ADD c VARCHAR(2) DEFAULT 'x y'"),
            [
                "ALTER",
                "TABLE",
                "`a b`",
                "ADD",
                "c",
                "VARCHAR(2)",
                "DEFAULT",
                "'x y'"
            ]
        );
        assert_eq!(
            super::added_columns("ALTER TABLE s ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'a b', ADD w DECIMAL(8,3) DEFAULT 1.5 AFTER id, ADD INDEX i (w), ADD (x INT)"),
            vec![
                ("note".to_string(), Some("'a b'".to_string())),
                ("w".to_string(), Some("1.5".to_string()))
            ]
        );
        assert_eq!(
            super::added_columns("ALTER TABLE s ADD COLUMN IF NOT EXISTS `odd name` INT"),
            vec![("odd name".to_string(), None)]
        );
        assert_eq!(
            super::sql_words("DROP TABLE `order items`, b"),
            vec!["DROP", "TABLE", "`order items`,", "b"]
        );
    }

    #[test]
    fn server_ids_are_stable_and_in_ferrys_range() {
        let id = super::server_id("shop");
        assert_eq!(id, super::server_id("shop"));
        assert_ne!(id, super::server_id("shop2"));
        assert!(id >= 0x4000_0000);
    }
}
