//! The memory database as a target: tables created from a catalog, chunks and batches applied
//! with their state under one lock each, faults where a test asked for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ferry_core::change::{Batch, Relation, Segment, TableChanges};
use ferry_core::connector::{
    ByteStream, ChangeApplier, ChunkFormat, ChunkWriter, SchemaTarget, Sink, StateStore,
};
use ferry_core::rows::RowReader;
use ferry_core::schema::{Catalog, Sequence, TableName, TableSchema};
use ferry_core::state::{
    Chunk, FailureSummary, MigrationState, StreamCheckpoint, TableProgress, TableState,
};
use ferry_core::{Cell, Error, Position, Result, Value};
use futures_util::StreamExt;

use super::{key_form, MemoryDatabase, Operation, State, Table};

/// A memory database written as a target.
pub struct MemorySink {
    database: MemoryDatabase,
    /// The migration lock this sink took last (0: none). Writers and appliers opened under an
    /// older lock fail, as the sessions of a process that lost its lock would: a run cut off
    /// leaves no writer behind that could write after the next run started.
    generation: Arc<AtomicU64>,
}

impl MemorySink {
    pub(super) fn new(database: MemoryDatabase) -> MemorySink {
        MemorySink {
            database,
            generation: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Refuses a write from a session opened under a lock since taken again.
fn require_lock(state: &State, generation: u64) -> Result<()> {
    if state.generation == generation {
        return Ok(());
    }
    Err(Error::transient(
        "target.session_lost",
        "the migration lock was taken again since this session opened",
    ))
}

fn no_table(table: &TableName) -> Error {
    Error::definite(
        "target.no_table",
        format!("{table} does not exist on the target"),
    )
    .with_table(table.clone())
}

fn progress_of<'a>(
    state: &'a mut State,
    migration: &str,
    table: &TableName,
) -> &'a mut TableProgress {
    state
        .migrations
        .entry(migration.to_string())
        .or_default()
        .tables
        .entry(table.clone())
        .or_insert_with(|| TableProgress {
            state: TableState::Pending,
            chunks: Vec::new(),
            note: None,
        })
}

#[async_trait]
impl SchemaTarget for MemorySink {
    async fn create_tables(&self, catalog: &Catalog) -> Result<()> {
        let mut state = self.database.lock();
        for table in &catalog.tables {
            state
                .tables
                .entry(table.name.clone())
                .or_insert_with(|| Table::new(table.clone()));
        }
        Ok(())
    }

    async fn create_secondary(&self, _tables: &[TableSchema]) -> Result<Vec<(TableName, String)>> {
        Ok(Vec::new())
    }

    async fn is_empty(&self, table: &TableName) -> Result<bool> {
        let state = self.database.lock();
        Ok(state
            .tables
            .get(table)
            .ok_or_else(|| no_table(table))?
            .rows
            .is_empty())
    }

    async fn truncate(&self, table: &TableName) -> Result<()> {
        let mut state = self.database.lock();
        state
            .tables
            .get_mut(table)
            .ok_or_else(|| no_table(table))?
            .rows
            .clear();
        Ok(())
    }

    async fn target_columns(&self, table: &TableName) -> Result<Vec<String>> {
        let state = self.database.lock();
        let stored = state.tables.get(table).ok_or_else(|| no_table(table))?;
        Ok(stored
            .schema
            .columns
            .iter()
            .map(|column| column.name.clone())
            .collect())
    }

    async fn add_columns(
        &self,
        table: &TableSchema,
        columns: &[String],
        _relax_dropped: bool,
    ) -> Result<Vec<String>> {
        if columns.is_empty() {
            return Ok(Vec::new());
        }
        Err(Error::operator(
            "target.add_columns",
            format!("the memory target cannot add columns to {}", table.name),
        ))
    }

    async fn set_sequences(&self, _sequences: &[Sequence]) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl StateStore for MemorySink {
    async fn lock_migration(
        &self,
        _migration: &str,
    ) -> Result<Box<dyn std::any::Any + Send + Sync>> {
        let mut state = self.database.lock();
        state.generation += 1;
        self.generation.store(state.generation, Ordering::SeqCst);
        Ok(Box::new(()))
    }

    async fn save_copy_end(&self, migration: &str, position: Position) -> Result<()> {
        let mut state = self.database.lock();
        state
            .migrations
            .entry(migration.to_string())
            .or_default()
            .copy_end = Some(position);
        Ok(())
    }

    async fn load_state(&self, migration: &str) -> Result<MigrationState> {
        Ok(self.database.migration_state(migration))
    }

    async fn start_stream(&self, migration: &str, position: Position) -> Result<()> {
        let mut state = self.database.lock();
        let stored = state.migrations.entry(migration.to_string()).or_default();
        stored.stream = Some(StreamCheckpoint {
            position,
            commit_time_unix_micros: None,
            updated_unix_micros: ferry_core::calendar::unix_micros_now(),
        });
        for progress in stored.tables.values_mut() {
            progress.state = TableState::Pending;
            progress.chunks.clear();
        }
        Ok(())
    }

    async fn save_plan(&self, migration: &str, table: &TableName, chunks: &[Chunk]) -> Result<()> {
        let mut state = self.database.lock();
        let progress = progress_of(&mut state, migration, table);
        progress.chunks = chunks.to_vec();
        progress.state = TableState::Copying;
        Ok(())
    }

    async fn set_table_state(
        &self,
        migration: &str,
        table: &TableName,
        table_state: TableState,
    ) -> Result<()> {
        let mut state = self.database.lock();
        progress_of(&mut state, migration, table).state = table_state;
        Ok(())
    }

    async fn reset(&self, migration: &str) -> Result<()> {
        let mut state = self.database.lock();
        let stored = state.migrations.entry(migration.to_string()).or_default();
        stored.stream = None;
        stored.copy_end = None;
        for progress in stored.tables.values_mut() {
            progress.state = TableState::Pending;
            progress.chunks.clear();
        }
        Ok(())
    }

    async fn record_failure(
        &self,
        migration: &str,
        at_unix_micros: i64,
        code: &str,
        message: &str,
    ) -> Result<()> {
        let mut state = self.database.lock();
        state.failures.push((
            migration.to_string(),
            at_unix_micros,
            code.to_string(),
            message.to_string(),
        ));
        Ok(())
    }

    async fn recorded_failures(&self, migration: &str) -> Result<FailureSummary> {
        let state = self.database.lock();
        let mine: Vec<_> = state
            .failures
            .iter()
            .filter(|(name, ..)| name == migration)
            .collect();
        Ok(FailureSummary {
            count: mine.len() as i64,
            latest: mine
                .iter()
                .rev()
                .take(5)
                .map(|(_, at, code, message)| {
                    (
                        ferry_core::calendar::utc_second_text(*at),
                        code.clone(),
                        message.clone(),
                    )
                })
                .collect(),
        })
    }

    async fn forget_table(&self, migration: &str, table: &TableName) -> Result<()> {
        let mut state = self.database.lock();
        if let Some(stored) = state.migrations.get_mut(migration) {
            stored.tables.remove(table);
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn accepted_formats(&self) -> &[ChunkFormat] {
        &[ChunkFormat::Rows]
    }

    async fn open_chunk_writer(&self, migration: &str) -> Result<Box<dyn ChunkWriter>> {
        Ok(Box::new(MemoryChunkWriter {
            database: self.database.clone(),
            migration: migration.to_string(),
            generation: self.generation.load(Ordering::SeqCst),
        }))
    }

    async fn open_applier(&self, migration: &str) -> Result<Box<dyn ChangeApplier>> {
        Ok(Box::new(MemoryApplier {
            database: self.database.clone(),
            migration: migration.to_string(),
            generation: self.generation.load(Ordering::SeqCst),
        }))
    }
}

struct MemoryChunkWriter {
    database: MemoryDatabase,
    migration: String,
    generation: u64,
}

#[async_trait]
impl ChunkWriter for MemoryChunkWriter {
    async fn write(
        &mut self,
        table: &TableSchema,
        chunk: u32,
        format: ChunkFormat,
        mut rows: ByteStream,
        snapshot_position: Option<Position>,
    ) -> Result<u64> {
        if format != ChunkFormat::Rows {
            return Err(Error::definite(
                "target.format",
                "the memory target loads only ferry's neutral row encoding",
            ));
        }
        tokio::time::sleep(self.database.latency()).await;
        let mut decoded = Vec::new();
        while let Some(bytes) = rows.next().await {
            let bytes = bytes?;
            let mut reader = RowReader::new(&bytes);
            while let Some(row) = reader.next_row()? {
                decoded.push(row);
            }
        }
        let mut state = self.database.lock();
        require_lock(&state, self.generation)?;
        if let Some(error) = MemoryDatabase::take_fault(&mut state, Operation::WriteChunk) {
            return Err(error);
        }
        // The rows and the done mark together.
        let stored = state
            .tables
            .get_mut(&table.name)
            .ok_or_else(|| no_table(&table.name))?;
        for row in &decoded {
            let key = stored.key_of(row);
            stored.rows.insert(key_form(&key), row.clone());
        }
        let count = decoded.len() as u64;
        let progress = progress_of(&mut state, &self.migration, &table.name);
        if let Some(planned) = progress
            .chunks
            .iter_mut()
            .find(|planned| planned.index == chunk)
        {
            planned.done = true;
            planned.rows = count;
            planned.snapshot_position = snapshot_position;
        }
        Ok(count)
    }
}

struct MemoryApplier {
    database: MemoryDatabase,
    migration: String,
    generation: u64,
}

/// The row image of `cells` (in `relation`'s column order) in the table's column order; with
/// `base`, unchanged cells keep its values.
fn image(
    table: &Table,
    relation: &Relation,
    cells: &[Cell],
    base: Option<&[Value]>,
) -> Result<Vec<Value>> {
    let mut row = base
        .map(<[Value]>::to_vec)
        .unwrap_or_else(|| vec![Value::Null; table.schema.columns.len()]);
    for (column, cell) in relation.columns.iter().zip(cells) {
        let index = table
            .schema
            .columns
            .iter()
            .position(|own| own.name == column.name)
            .ok_or_else(|| {
                Error::definite(
                    "apply.missing_column",
                    format!(
                        "column {} of {} does not exist on the target",
                        column.name, relation.table
                    ),
                )
                .with_table(relation.table.clone())
            })?;
        match cell {
            Cell::Value(value) => row[index] = value.clone(),
            Cell::Unchanged if base.is_some() => {}
            Cell::Unchanged => {
                return Err(Error::definite(
                    "apply.unchanged",
                    "an unchanged value reached a statement that writes it",
                ));
            }
        }
    }
    Ok(row)
}

fn apply_table(state: &mut State, changes: &TableChanges) -> Result<()> {
    let relation = &changes.relation;
    let table = state
        .tables
        .get_mut(&relation.table)
        .ok_or_else(|| no_table(&relation.table))?;
    for key in &changes.deletes {
        table.rows.remove(&key_form(key));
    }
    for cells in &changes.upserts {
        let row = image(table, relation, cells, None)?;
        let key = table.key_of(&row);
        table.rows.insert(key_form(&key), row);
    }
    for cells in &changes.updates {
        let partial = image_key(table, relation, cells)?;
        if let Some(existing) = table.rows.get(&key_form(&partial)).cloned() {
            let row = image(table, relation, cells, Some(&existing))?;
            table.rows.insert(key_form(&partial), row);
        }
    }
    for (old_key, cells) in &changes.moves {
        if let Some(existing) = table.rows.remove(&key_form(old_key)) {
            let row = image(table, relation, cells, Some(&existing))?;
            let key = table.key_of(&row);
            table.rows.insert(key_form(&key), row);
        }
    }
    Ok(())
}

/// The key values of a partial image (key columns are always present).
fn image_key(table: &Table, relation: &Relation, cells: &[Cell]) -> Result<Vec<Value>> {
    table
        .schema
        .primary_key
        .iter()
        .map(|name| {
            let at = relation
                .columns
                .iter()
                .position(|column| &column.name == name);
            match at.map(|at| &cells[at]) {
                Some(Cell::Value(value)) => Ok(value.clone()),
                _ => Err(Error::definite(
                    "apply.key",
                    format!("an update of {} without its key", relation.table),
                )),
            }
        })
        .collect()
}

#[async_trait]
impl ChangeApplier for MemoryApplier {
    async fn apply(
        &mut self,
        batch: &Batch,
        checkpoint: Position,
        commit_time_unix_micros: Option<i64>,
    ) -> Result<()> {
        tokio::time::sleep(self.database.latency()).await;
        let mut state = self.database.lock();
        require_lock(&state, self.generation)?;
        if let Some(error) = MemoryDatabase::take_fault(&mut state, Operation::Apply) {
            return Err(error);
        }
        // All or nothing: the batch is applied to a copy of the tables, which replaces them
        // (with the checkpoint) only when every change applied.
        let tables_before: Vec<(TableName, std::collections::BTreeMap<String, Vec<Value>>)> = state
            .tables
            .iter()
            .map(|(name, table)| (name.clone(), table.rows.clone()))
            .collect();
        let applied = (|| {
            for segment in &batch.segments {
                match segment {
                    Segment::Rows(tables) => {
                        for changes in tables {
                            apply_table(&mut state, changes)?;
                        }
                    }
                    Segment::Truncate { relations, .. } => {
                        for relation in relations {
                            if let Some(table) = state.tables.get_mut(&relation.table) {
                                table.rows.clear();
                            }
                        }
                    }
                    Segment::Cascade(_) | Segment::Keyless(_) => {
                        return Err(Error::definite(
                            "apply.unsupported",
                            "the memory target models neither cascades nor tables without a key",
                        ));
                    }
                }
            }
            Ok(())
        })();
        if let Err(error) = applied {
            for (name, rows) in tables_before {
                if let Some(table) = state.tables.get_mut(&name) {
                    table.rows = rows;
                }
            }
            return Err(error);
        }
        for (table, note) in &batch.failed_tables {
            let progress = progress_of(&mut state, &self.migration, table);
            progress.state = TableState::Failed;
            progress.note = Some(note.clone());
        }
        state
            .migrations
            .entry(self.migration.clone())
            .or_default()
            .stream = Some(StreamCheckpoint {
            position: checkpoint,
            commit_time_unix_micros,
            updated_unix_micros: ferry_core::calendar::unix_micros_now(),
        });
        state.applied_batches += 1;
        match MemoryDatabase::take_fault(&mut state, Operation::ApplyThenFail) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
