//! A source seen through transforms (renames, dropped columns, row filters): the engine and the
//! sink see target names and columns; the wrapped source is asked in its own.
//!
//! - Catalog: target names and columns; each table's source definition is remembered so that
//!   chunk plans, reads and the stream are asked of the source in its own terms.
//! - Copy: dropped columns are never read. A filtered table travels in the neutral row encoding
//!   and only matching rows are passed on.
//! - Stream: relations are renamed and dropped columns removed from every image. With a filter, an
//!   insert that does not match is left out, and an update whose new image does not match becomes
//!   a delete of the row (it may have matched before); deletes always pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::change::{CascadeOperation, Change, Relation, RelationColumn, StreamEvent};
use ferry_core::connector::{ByteStream, ChangeStream, ChunkFormat, ChunkReader, Snapshot, Source};
use ferry_core::rows::{encode_row, RowReader};
use ferry_core::schema::{Catalog, Sequence, TableName, TableSchema};
use ferry_core::select::Selection;
use ferry_core::state::KeyRange;
use ferry_core::transform::{null_zero_date, Filter, Transforms};
use ferry_core::{Cell, Error, Position, Result, Value};
use futures_util::StreamExt;
use tracing::{debug, warn};

type Originals = Arc<Mutex<HashMap<TableName, TableSchema>>>;

/// A source with transforms applied.
pub struct TransformedSource {
    inner: Arc<dyn Source>,
    transforms: Arc<Transforms>,
    /// Target name to the source's own definition.
    originals: Originals,
}

impl TransformedSource {
    pub fn new(inner: Box<dyn Source>, transforms: Transforms) -> Self {
        TransformedSource {
            inner: Arc::from(inner),
            transforms: Arc::new(transforms),
            originals: Arc::default(),
        }
    }
}

fn original(originals: &Originals, table: &TableName) -> Result<TableSchema> {
    originals
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(table)
        .cloned()
        .ok_or_else(|| {
            Error::definite(
                "transform.unknown_table",
                format!("table {table} was not in the catalog"),
            )
        })
}

fn map_sequence(transforms: &Transforms, mut sequence: Sequence) -> Sequence {
    if let Some((table, column)) = &sequence.owned_by {
        sequence.owned_by = Some((
            transforms.target_name(table),
            transforms.column_name(table, column).to_string(),
        ));
    }
    sequence
}

#[async_trait]
impl Source for TransformedSource {
    async fn read_catalog(&self, selection: &Selection) -> Result<Catalog> {
        // A look at a few tables names them as the target does: ask for their source names.
        let narrowed = selection.restriction().map(|names| {
            let known = self
                .originals
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            names
                .iter()
                .map(|name| {
                    known
                        .get(name)
                        .map(|table| table.name.clone())
                        .unwrap_or_else(|| name.clone())
                })
                .collect::<Vec<_>>()
        });
        let selection = match &narrowed {
            Some(names) => selection.restricted_to(names),
            None => selection.clone(),
        };
        let mut catalog = self.inner.read_catalog(&selection).await?;
        let mut originals = HashMap::new();
        let mut tables = Vec::new();
        for table in &catalog.tables {
            let target = self.transforms.target_schema(table)?;
            let left_out: Vec<&str> = table
                .secondary
                .iter()
                .filter(|object| {
                    let renamed = ferry_core::transform::renamed_object(&target.name, &object.name);
                    !target
                        .secondary
                        .iter()
                        .any(|kept| kept.name == object.name || kept.name == renamed)
                })
                .map(|object| object.name.as_str())
                .collect();
            if !left_out.is_empty() {
                warn!(table = %target.name, left_out = %left_out.join(", "), "indexes and constraints a transform cannot rewrite (expressions, dropped columns, foreign keys) are not created on the target; create them by hand");
            }
            if let Some(previous) = originals.insert(target.name.clone(), table.clone()) {
                return Err(Error::operator(
                    "config.transform",
                    format!(
                        "{} and {} would both become {}",
                        previous.name, table.name, target.name
                    ),
                )
                .with_hint("give each table its own target name"));
            }
            tables.push(target);
        }
        catalog.tables = tables;
        catalog.sequences = catalog
            .sequences
            .into_iter()
            .map(|sequence| map_sequence(&self.transforms, sequence))
            .collect();
        for (name, _) in &mut catalog.unsupported {
            *name = self.transforms.target_name(name);
        }
        let mut known = self
            .originals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if narrowed.is_some() {
            // A narrowed look adds to what is known; it does not forget the other tables.
            known.extend(originals);
        } else {
            *known = originals;
        }
        drop(known);
        Ok(catalog)
    }

    async fn create_stream(
        &self,
        migration: &str,
        tables: &[TableName],
    ) -> Result<(Position, Box<dyn Snapshot>)> {
        let names = tables
            .iter()
            .map(|table| original(&self.originals, table).map(|schema| schema.name))
            .collect::<Result<Vec<_>>>()?;
        let (position, snapshot) = self.inner.create_stream(migration, &names).await?;
        Ok((
            position,
            Box::new(TransformedSnapshot {
                inner: snapshot,
                transforms: self.transforms.clone(),
                originals: self.originals.clone(),
            }),
        ))
    }

    async fn update_stream(&self, migration: &str, tables: &[TableName]) -> Result<()> {
        let names = tables
            .iter()
            .map(|table| original(&self.originals, table).map(|schema| schema.name))
            .collect::<Result<Vec<_>>>()?;
        self.inner.update_stream(migration, &names).await
    }

    async fn open_stream(
        &self,
        migration: &str,
        position: Position,
        tables: &[TableSchema],
        ignore_writes_of: &[String],
    ) -> Result<Box<dyn ChangeStream>> {
        let sources = tables
            .iter()
            .map(|table| original(&self.originals, &table.name))
            .collect::<Result<Vec<_>>>()?;
        let inner = self
            .inner
            .open_stream(migration, position, &sources, ignore_writes_of)
            .await?;
        Ok(Box::new(TransformedStream {
            inner,
            source: self.inner.clone(),
            transforms: self.transforms.clone(),
            relations: HashMap::new(),
            partial_into_filter: None,
            cascade_problem: None,
            queued: std::collections::VecDeque::new(),
        }))
    }

    async fn fetch_rows(
        &self,
        table: &TableName,
        key_columns: &[String],
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>> {
        // Asked in target names: answered by the source in its own.
        let source = original(&self.originals, table)?;
        let source_name = |target: &String| -> String {
            source
                .columns
                .iter()
                .find(|column| self.transforms.column_name(&source.name, &column.name) == target)
                .map_or_else(|| target.clone(), |column| column.name.clone())
        };
        let key_columns: Vec<String> = key_columns.iter().map(source_name).collect();
        let columns: Vec<String> = columns.iter().map(source_name).collect();
        self.inner
            .fetch_rows(&source.name, &key_columns, &columns, keys)
            .await
    }

    async fn fresh_snapshot(&self, exact: bool) -> Result<Box<dyn Snapshot>> {
        let snapshot = self.inner.fresh_snapshot(exact).await?;
        Ok(Box::new(TransformedSnapshot {
            inner: snapshot,
            transforms: self.transforms.clone(),
            originals: self.originals.clone(),
        }))
    }

    async fn read_sequences(&self, sequences: &[TableName]) -> Result<Vec<Sequence>> {
        Ok(self
            .inner
            .read_sequences(sequences)
            .await?
            .into_iter()
            .map(|sequence| map_sequence(&self.transforms, sequence))
            .collect())
    }

    async fn current_position(&self) -> Result<Position> {
        self.inner.current_position().await
    }

    async fn stream_retention(
        &self,
        migration: &str,
    ) -> Result<Option<ferry_core::state::StreamRetention>> {
        self.inner.stream_retention(migration).await
    }
}

struct TransformedSnapshot {
    inner: Box<dyn Snapshot>,
    transforms: Arc<Transforms>,
    originals: Originals,
}

#[async_trait]
impl Snapshot for TransformedSnapshot {
    async fn plan_chunks(&self, table: &TableSchema, rows_per_chunk: u64) -> Result<Vec<KeyRange>> {
        let read = self
            .transforms
            .read_schema(&original(&self.originals, &table.name)?)?;
        self.inner.plan_chunks(&read, rows_per_chunk).await
    }

    async fn open_reader(&self) -> Result<Box<dyn ChunkReader>> {
        Ok(Box::new(TransformedReader {
            inner: self.inner.open_reader().await?,
            transforms: self.transforms.clone(),
            originals: self.originals.clone(),
        }))
    }
}

struct TransformedReader {
    inner: Box<dyn ChunkReader>,
    transforms: Arc<Transforms>,
    originals: Originals,
}

#[async_trait]
impl ChunkReader for TransformedReader {
    fn snapshot_position(&self) -> Option<ferry_core::Position> {
        self.inner.snapshot_position()
    }

    async fn read(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        accepted: &[ChunkFormat],
    ) -> Result<(ChunkFormat, ByteStream)> {
        let source = original(&self.originals, &table.name)?;
        let read = self.transforms.read_schema(&source)?;
        let filter = self.transforms.filter(&source.name).cloned();
        let zero_dates_to_null = self.transforms.zero_dates_to_null();
        if filter.is_none() && !zero_dates_to_null {
            return self.inner.read(&read, range, accepted).await;
        }
        if !accepted.contains(&ChunkFormat::Rows) {
            return Err(Error::operator(
                "transform.format",
                format!(
                    "the target cannot load the row encoding a filtered table ({}) needs",
                    table.name
                ),
            ));
        }
        let (_, rows) = self.inner.read(&read, range, &[ChunkFormat::Rows]).await?;
        let names: Vec<String> = read
            .writable_columns()
            .map(|column| column.name.clone())
            .collect();
        let filtered = rows.map(move |item| {
            let item = item?;
            let mut reader = RowReader::new(&item);
            let mut output = Vec::with_capacity(item.len());
            while let Some(mut row) = reader.next_row()? {
                if zero_dates_to_null {
                    for value in &mut row {
                        null_zero_date(value);
                    }
                }
                let value = |column: &str| {
                    names
                        .iter()
                        .position(|name| name == column)
                        .and_then(|index| row.get(index))
                };
                if filter
                    .as_ref()
                    .is_none_or(|filter| filter.matches(value) == Some(true))
                {
                    encode_row(&row, &mut output);
                }
            }
            Ok(Bytes::from(output))
        });
        Ok((ChunkFormat::Rows, Box::pin(filtered)))
    }
}

/// How a source relation maps to the target.
struct Mapping {
    /// The source relation this mapping was made for (a new definition replaces it).
    source: Arc<Relation>,
    relation: Arc<Relation>,
    keep: Vec<usize>,
    filter: Option<Filter>,
    source_names: Vec<String>,
}

/// An update of a filtered table that lacked unchanged values and may be entering the filter:
/// its row is read from the source (see `TransformedStream::next`).
struct Partial {
    relation: Arc<Relation>,
    old_key: Option<Vec<Value>>,
    key: Option<Vec<Value>>,
}

struct TransformedStream {
    inner: Box<dyn ChangeStream>,
    /// The wrapped source, to read rows the log carried partially.
    source: Arc<dyn Source>,
    transforms: Arc<Transforms>,
    relations: HashMap<u32, Option<Arc<Mapping>>>,
    /// Set when an update of a filtered table lacked values (see `map`).
    partial_into_filter: Option<Partial>,
    /// Changes made from a partial one, waiting to be returned.
    queued: std::collections::VecDeque<Change>,
    /// Set when a cascade goes through a dropped column (see `map_cascade`).
    cascade_problem: Option<String>,
}

impl TransformedStream {
    fn mapping(&mut self, relation: &Arc<Relation>) -> Option<Arc<Mapping>> {
        let transforms = self.transforms.clone();
        // PostgreSQL sends a relation again, under the same id, after its definition changed.
        if self.relations.get(&relation.id).is_some_and(|mapping| {
            mapping
                .as_ref()
                .is_some_and(|mapping| *mapping.source != **relation)
        }) {
            self.relations.remove(&relation.id);
        }
        self.relations
            .entry(relation.id)
            .or_insert_with(|| {
                let table = &relation.table;
                let touched = transforms.target_name(table) != *table
                    || transforms.filter(table).is_some()
                    || relation.columns.iter().any(|column| {
                        transforms.dropped(table, &column.name)
                            || transforms.column_name(table, &column.name) != column.name
                    });
                touched.then(|| {
                    let keep: Vec<usize> = (0..relation.columns.len())
                        .filter(|index| !transforms.dropped(table, &relation.columns[*index].name))
                        .collect();
                    Arc::new(Mapping {
                        source: relation.clone(),
                        relation: Arc::new(Relation {
                            id: relation.id,
                            table: transforms.target_name(table),
                            columns: keep
                                .iter()
                                .map(|index| RelationColumn {
                                    type_signature: relation.columns[*index].type_signature.clone(),
                                    name: transforms
                                        .column_name(table, &relation.columns[*index].name)
                                        .to_string(),
                                    is_key: relation.columns[*index].is_key,
                                })
                                .collect(),
                        }),
                        keep,
                        filter: transforms.filter(table).cloned(),
                        source_names: relation
                            .columns
                            .iter()
                            .map(|column| column.name.clone())
                            .collect(),
                    })
                })
            })
            .clone()
    }

    /// A cascade in target names: the parent's images projected, every rule's tables and
    /// columns renamed. A rule over a dropped column cannot be reproduced (see `next`).
    fn map_cascade(&mut self, operation: Arc<CascadeOperation>) -> Change {
        let transforms = self.transforms.clone();
        let mut mapped = (*operation).clone();
        if let Some(mapping) = self.mapping(&operation.relation) {
            let project = |row: &Vec<Value>| -> Vec<Value> {
                mapping
                    .keep
                    .iter()
                    .map(|index| row[*index].clone())
                    .collect()
            };
            mapped.relation = mapping.relation.clone();
            mapped.old = project(&operation.old);
            mapped.new = operation.new.as_ref().map(project);
        }
        let mut rules = Vec::new();
        for rule in operation.rules.iter() {
            match transforms.target_foreign_key(rule) {
                Some(renamed) => rules.push(renamed),
                None => {
                    self.cascade_problem = Some(format!(
                        "foreign key {} of {} cascades over a column the transforms drop",
                        rule.name, rule.table
                    ))
                }
            }
        }
        mapped.rules = Arc::new(rules);
        Change::Cascade(Arc::new(mapped))
    }

    /// The change as the target sees it; `None` when it is left out.
    fn map(&mut self, change: Change) -> Option<Change> {
        let change = match change {
            Change::Cascade(operation) => return Some(self.map_cascade(operation)),
            other => other,
        };
        let relation = match &change {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => relation.clone(),
            Change::Cascade(_) => unreachable!("handled above"),
            Change::Truncate {
                relations,
                cascade,
                restart_identity,
            } => {
                let relations = relations
                    .iter()
                    .map(|relation| {
                        self.mapping(relation)
                            .map(|mapping| mapping.relation.clone())
                            .unwrap_or_else(|| relation.clone())
                    })
                    .collect();
                return Some(Change::Truncate {
                    relations,
                    cascade: *cascade,
                    restart_identity: *restart_identity,
                });
            }
        };
        let Some(mapping) = self.mapping(&relation) else {
            return Some(change);
        };
        let project = |row: &[Cell]| {
            mapping
                .keep
                .iter()
                .map(|index| row[*index].clone())
                .collect::<Vec<_>>()
        };
        let matches = |row: &[Cell]| {
            mapping.filter.as_ref().map(|filter| {
                filter.matches(|column| {
                    let index = mapping
                        .source_names
                        .iter()
                        .position(|name| name == column)?;
                    match &row[index] {
                        Cell::Value(value) => Some(value),
                        Cell::Unchanged => None,
                    }
                })
            })
        };
        let key_of = |row: &[Cell]| -> Option<Vec<Value>> {
            relation
                .key_indexes()
                .iter()
                .map(|index| match &row[*index] {
                    Cell::Value(value) => Some(value.clone()),
                    Cell::Unchanged => None,
                })
                .collect()
        };
        let mapped = mapping.relation.clone();
        if relation.is_keyless() {
            // Rows are whole images on both sides: old images are projected like new ones, and
            // a row crossing the filter's edge is inserted or deleted as a whole.
            let values =
                |row: &[Value]| -> Vec<Cell> { row.iter().cloned().map(Cell::Value).collect() };
            let kept = |row: &[Value]| matches(&values(row)) != Some(Some(false));
            let project_values = |row: &[Value]| -> Vec<Value> {
                mapping
                    .keep
                    .iter()
                    .map(|index| row[*index].clone())
                    .collect()
            };
            let whole = |row: &[Cell]| -> Option<Vec<Value>> {
                row.iter()
                    .map(|cell| match cell {
                        Cell::Value(value) => Some(value.clone()),
                        Cell::Unchanged => None,
                    })
                    .collect()
            };
            return match change {
                Change::Insert { row, .. } => {
                    (matches(&row) != Some(Some(false))).then(|| Change::Insert {
                        relation: mapped,
                        row: project(&row),
                    })
                }
                Change::Update {
                    old_key: Some(old),
                    row,
                    ..
                } => {
                    let new_kept = whole(&row).is_some_and(|new| kept(&new));
                    match (kept(&old), new_kept) {
                        (true, true) => Some(Change::Update {
                            relation: mapped,
                            old_key: Some(project_values(&old)),
                            row: project(&row),
                        }),
                        (true, false) => Some(Change::Delete {
                            relation: mapped,
                            key: project_values(&old),
                        }),
                        (false, true) => Some(Change::Insert {
                            relation: mapped,
                            row: project(&row),
                        }),
                        (false, false) => None,
                    }
                }
                // Refused by the merge with a clear error (no old image to find the row by).
                update @ Change::Update { .. } => Some(update),
                Change::Delete { key, .. } => kept(&key).then(|| Change::Delete {
                    relation: mapped,
                    key: project_values(&key),
                }),
                Change::Truncate { .. } | Change::Cascade(_) => unreachable!("handled above"),
            };
        }
        match change {
            Change::Insert { row, .. } => match matches(&row) {
                Some(Some(false)) => None,
                _ => Some(Change::Insert {
                    relation: mapped,
                    row: project(&row),
                }),
            },
            Change::Update { old_key, row, .. } => match matches(&row) {
                Some(Some(false)) => Some(Change::Delete {
                    relation: mapped,
                    key: old_key.or_else(|| key_of(&row))?,
                }),
                verdict => {
                    // A row that matches now may be entering the filter, so the target may not
                    // have it: an image that lacks unchanged (TOASTed) values cannot be written
                    // whole. Its row is read from the source instead (see `next`).
                    if verdict.is_some() && row.iter().any(|cell| matches!(cell, Cell::Unchanged)) {
                        self.partial_into_filter = Some(Partial {
                            relation: relation.clone(),
                            key: key_of(&row),
                            old_key,
                        });
                        return None;
                    }
                    Some(Change::Update {
                        relation: mapped,
                        old_key,
                        row: project(&row),
                    })
                }
            },
            Change::Delete { key, .. } => Some(Change::Delete {
                relation: mapped,
                key,
            }),
            Change::Truncate { .. } | Change::Cascade(_) => unreachable!("handled above"),
        }
    }
}

impl TransformedStream {
    /// The changes that stand for a partial update: the row as the source has it now (an
    /// update, from the old key where the key changed), or deletes where it is gone. Read later
    /// than its change, the row converges as the stream replays what follows.
    async fn read_whole(&mut self, partial: Partial) -> Result<Vec<Change>> {
        let relation = partial.relation;
        let Some(key) = partial.key else {
            return Err(Error::operator(
                "transform.partial_image",
                format!("an update of filtered table {} lacks its key values", relation.table),
            )
            .with_hint("on the PostgreSQL source: ALTER TABLE ... REPLICA IDENTITY FULL for this table, then run again"));
        };
        let columns: Vec<String> = relation
            .columns
            .iter()
            .map(|column| column.name.clone())
            .collect();
        let key_columns: Vec<String> = relation
            .key_indexes()
            .iter()
            .map(|index| columns[*index].clone())
            .collect();
        let rows = self
            .source
            .fetch_rows(
                &relation.table,
                &key_columns,
                &columns,
                std::slice::from_ref(&key),
            )
            .await?;
        debug!(table = %relation.table, found = rows.len(), "read a row entering a filter from the source");
        Ok(match rows.into_iter().next() {
            Some(values) => vec![Change::Update {
                relation,
                old_key: partial.old_key,
                row: values.into_iter().map(Cell::Value).collect(),
            }],
            None => {
                let mut gone = vec![Change::Delete {
                    relation: relation.clone(),
                    key: key.clone(),
                }];
                if let Some(old_key) = partial.old_key.filter(|old| *old != key) {
                    gone.push(Change::Delete {
                        relation,
                        key: old_key,
                    });
                }
                gone
            }
        })
    }
}

#[async_trait]
impl ChangeStream for TransformedStream {
    async fn next(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            if let Some(whole) = self.queued.pop_front() {
                if let Some(change) = self.map(whole) {
                    return Ok(Some(StreamEvent::Change(change)));
                }
                continue;
            }
            let event = self.inner.next().await?;
            match event {
                Some(StreamEvent::Change(mut change)) => {
                    if self.transforms.zero_dates_to_null() {
                        if let Change::Insert { row, .. } | Change::Update { row, .. } = &mut change
                        {
                            for cell in row.iter_mut() {
                                if let Cell::Value(value) = cell {
                                    null_zero_date(value);
                                }
                            }
                        }
                    }
                    let mapped = self.map(change);
                    // Returned from the top of the loop, before the next change is read.
                    if let Some(partial) = self.partial_into_filter.take() {
                        let whole = self.read_whole(partial).await?;
                        self.queued.extend(whole);
                    }
                    if let Some(problem) = self.cascade_problem.take() {
                        return Err(Error::operator("transform.cascade_column", problem)
                            .with_hint("keep the foreign key's columns (remove them from `drop`), or leave one of the tables out"));
                    }
                    if let Some(change) = mapped {
                        return Ok(Some(StreamEvent::Change(change)));
                    }
                }
                Some(StreamEvent::SchemaChanged { relation }) => {
                    // Named and shaped as the target sees it.
                    let relation = self
                        .mapping(&relation)
                        .map(|mapping| mapping.relation.clone())
                        .unwrap_or(relation);
                    return Ok(Some(StreamEvent::SchemaChanged { relation }));
                }
                other => return Ok(other),
            }
        }
    }

    fn acknowledge(&mut self, position: Position) {
        self.inner.acknowledge(position);
    }

    async fn close(self: Box<Self>) -> Result<()> {
        self.inner.close().await
    }
}
