//! The memory database as a source: its catalog, snapshots of its rows, and a change stream
//! over its log of committed transactions.

use std::collections::VecDeque;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::change::StreamEvent;
use ferry_core::connector::{ByteStream, ChangeStream, ChunkFormat, ChunkReader, Snapshot, Source};
use ferry_core::schema::{Catalog, Sequence, TableName, TableSchema};
use ferry_core::select::Selection;
use ferry_core::state::KeyRange;
use ferry_core::{Error, Position, Result, Value};
use tokio::sync::watch;

use super::{compare_keys, key_form, position, transactions_of, MemoryDatabase};

/// A memory database read as a source.
pub struct MemorySource {
    database: MemoryDatabase,
}

impl MemorySource {
    pub(super) fn new(database: MemoryDatabase) -> MemorySource {
        MemorySource { database }
    }

    /// The rows of every table now, with the position they are exact at.
    fn snapshot(&self) -> MemorySnapshot {
        let state = self.database.lock();
        MemorySnapshot {
            position: position(state.log.len() as u64),
            tables: state
                .tables
                .iter()
                .map(|(name, table)| {
                    let mut rows: KeyedRows = table
                        .rows
                        .values()
                        .map(|row| (table.key_of(row), row.clone()))
                        .collect();
                    rows.sort_by(|left, right| compare_keys(&left.0, &right.0));
                    (name.clone(), rows)
                })
                .collect(),
        }
    }
}

#[async_trait]
impl Source for MemorySource {
    async fn read_catalog(&self, selection: &Selection) -> Result<Catalog> {
        let state = self.database.lock();
        Ok(Catalog {
            tables: state
                .tables
                .values()
                .filter(|table| selection.matches(&table.schema.name))
                .map(|table| {
                    let mut schema = table.schema.clone();
                    schema.estimated_rows = table.rows.len() as u64;
                    schema
                })
                .collect(),
            ..Catalog::default()
        })
    }

    async fn create_stream(
        &self,
        _migration: &str,
        _tables: &[TableName],
    ) -> Result<(Position, Box<dyn Snapshot>)> {
        let snapshot = self.snapshot();
        Ok((snapshot.position.clone(), Box::new(snapshot)))
    }

    async fn update_stream(&self, _migration: &str, _tables: &[TableName]) -> Result<()> {
        Ok(())
    }

    async fn open_stream(
        &self,
        _migration: &str,
        position: Position,
        tables: &[TableSchema],
        _ignore_writes_of: &[String],
    ) -> Result<Box<dyn ChangeStream>> {
        Ok(Box::new(MemoryStream {
            database: self.database.clone(),
            next_transaction: transactions_of(&position)?,
            tables: tables.iter().map(|table| table.name.clone()).collect(),
            events: VecDeque::new(),
            committed: self.database.committed.subscribe(),
        }))
    }

    async fn fetch_rows(
        &self,
        table: &TableName,
        key_columns: &[String],
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>> {
        let state = self.database.lock();
        let Some(stored) = state.tables.get(table) else {
            return Ok(Vec::new());
        };
        let index = |name: &String| {
            stored
                .schema
                .columns
                .iter()
                .position(|column| &column.name == name)
                .ok_or_else(|| {
                    Error::definite("source.no_column", format!("{table} has no column {name}"))
                })
        };
        let key_indexes: Vec<usize> = key_columns.iter().map(index).collect::<Result<_>>()?;
        let column_indexes: Vec<usize> = columns.iter().map(index).collect::<Result<_>>()?;
        let wanted: std::collections::HashSet<String> =
            keys.iter().map(|key| key_form(key)).collect();
        Ok(stored
            .rows
            .values()
            .filter(|row| {
                let key: Vec<Value> = key_indexes.iter().map(|&at| row[at].clone()).collect();
                wanted.contains(&key_form(&key))
            })
            .map(|row| column_indexes.iter().map(|&at| row[at].clone()).collect())
            .collect())
    }

    async fn fresh_snapshot(&self, _exact: bool) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(self.snapshot()))
    }

    async fn read_sequences(&self, _sequences: &[TableName]) -> Result<Vec<Sequence>> {
        Ok(Vec::new())
    }

    async fn current_position(&self) -> Result<Position> {
        Ok(self.database.end())
    }
}

/// A table's rows as (key, row), in key order.
type KeyedRows = Vec<(Vec<Value>, Vec<Value>)>;

/// Every table's rows as they were at `position`.
#[derive(Clone)]
struct MemorySnapshot {
    position: Position,
    tables: std::collections::BTreeMap<TableName, KeyedRows>,
}

#[async_trait]
impl Snapshot for MemorySnapshot {
    async fn plan_chunks(&self, table: &TableSchema, rows_per_chunk: u64) -> Result<Vec<KeyRange>> {
        let rows = self
            .tables
            .get(&table.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let bounds = rows
            .iter()
            .skip(rows_per_chunk.max(1) as usize)
            .step_by(rows_per_chunk.max(1) as usize)
            .map(|(key, _)| key.clone())
            .collect();
        Ok(KeyRange::covering(bounds))
    }

    async fn open_reader(&self) -> Result<Box<dyn ChunkReader>> {
        Ok(Box::new(MemoryChunkReader {
            snapshot: self.clone(),
        }))
    }
}

struct MemoryChunkReader {
    snapshot: MemorySnapshot,
}

#[async_trait]
impl ChunkReader for MemoryChunkReader {
    async fn read(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        accepted: &[ChunkFormat],
    ) -> Result<(ChunkFormat, ByteStream)> {
        if !accepted.contains(&ChunkFormat::Rows) {
            return Err(Error::definite(
                "source.format",
                "the memory source writes only ferry's neutral row encoding",
            ));
        }
        let rows = self
            .snapshot
            .tables
            .get(&table.name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut encoded = Vec::new();
        for (key, row) in rows {
            let above = range
                .lower
                .as_ref()
                .is_none_or(|lower| compare_keys(key, lower).is_ge());
            let below = range
                .upper
                .as_ref()
                .is_none_or(|upper| compare_keys(key, upper).is_lt());
            if above && below {
                ferry_core::rows::encode_row(row, &mut encoded);
            }
        }
        let stream = futures_util::stream::iter([Ok(Bytes::from(encoded))]);
        Ok((ChunkFormat::Rows, Box::pin(stream)))
    }

    fn snapshot_position(&self) -> Option<Position> {
        Some(self.snapshot.position.clone())
    }
}

/// Reads the log from a transaction on: each transaction as Begin, its changes to the
/// streamed tables, Commit.
struct MemoryStream {
    database: MemoryDatabase,
    next_transaction: u64,
    tables: std::collections::HashSet<TableName>,
    events: VecDeque<StreamEvent>,
    committed: watch::Receiver<u64>,
}

#[async_trait]
impl ChangeStream for MemoryStream {
    async fn next(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            let transaction = {
                let state = self.database.lock();
                state.log.get(self.next_transaction as usize).cloned()
            };
            match transaction {
                Some(changes) => {
                    self.next_transaction += 1;
                    let after = position(self.next_transaction);
                    self.events.push_back(StreamEvent::Begin {
                        at: Some(after.clone()),
                    });
                    for change in changes {
                        let streamed = match &change {
                            ferry_core::change::Change::Insert { relation, .. }
                            | ferry_core::change::Change::Update { relation, .. }
                            | ferry_core::change::Change::Delete { relation, .. } => {
                                self.tables.contains(&relation.table)
                            }
                            _ => true,
                        };
                        if streamed {
                            self.events.push_back(StreamEvent::Change(change));
                        }
                    }
                    self.events.push_back(StreamEvent::Commit {
                        position: after,
                        commit_time_unix_micros: ferry_core::calendar::unix_micros_now(),
                    });
                }
                // Cancel-safe: a dropped wait loses nothing (the log is read again).
                None => {
                    if self.committed.changed().await.is_err() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn acknowledge(&mut self, position: Position) {
        self.database.lock().acknowledged = Some(position);
    }

    async fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
