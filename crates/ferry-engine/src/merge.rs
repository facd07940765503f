//! Merging a run of changes into a [`Batch`] in which every key appears once.
//!
//! Applying one merged operation per key gives the same result as applying every change in
//! order, because changes to different keys commute (ferry applies with triggers and foreign keys
//! disabled, like PostgreSQL's own apply worker). Per key:
//!
//! ```text
//!   earlier \ later   insert/full update   partial update (has Unchanged)      delete
//!   (none)            upsert               update                              delete
//!   upsert            upsert               upsert, Unchanged filled from earlier delete
//!   update            upsert               update, later cells win             delete
//!   delete            upsert               delete (the row is gone)            delete
//! ```
//!
//! A key change (an update with `old_key`) is a delete of the old key and a write of the new one,
//! except when the new image lacks unchanged values and the old row's full image is not in the
//! batch: then the row must be moved on the target with its values, so the batch is cut there and
//! the move travels alone as a partial update keyed by the old key. A truncate also cuts the batch.
//!
//! A table without a key is not merged: its changes stay in source order, each matched on the
//! target by the row's whole image ([`KeylessChanges`]). They go after the merged rows of the
//! same segment, which is sound because different tables are independent.
//!
//! A cascade (foreign-key actions the source did not log) changes rows of other tables by value,
//! not by key, so it must apply in its place in source order: it cuts the batch when rows of a
//! table it may change are being merged, and otherwise goes ahead of the rows being merged.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_core::change::{
    Batch, CascadeOperation, Change, KeylessChange, KeylessChanges, Relation, Segment, TableChanges,
};
use ferry_core::{Cell, Error, Result, Value};

enum Operation {
    Upsert(Vec<Cell>),
    Update(Vec<Cell>),
    Delete(Vec<Value>),
}

struct TableMerge {
    relation: Arc<Relation>,
    key_indexes: Vec<usize>,
    /// Per key: the sequence number of the last change merged into it, and the operation.
    operations: HashMap<String, (u64, Operation)>,
}

/// Accumulates changes into a batch. See the module notes for the merge rules.
#[derive(Default)]
pub struct BatchBuilder {
    finished: Vec<Segment>,
    /// Foreign-key actions that apply before the rows being merged: each commutes with every
    /// row merged before it arrived (none of those is in a table it may change), and rows merged
    /// after it apply after it.
    leading: Vec<Arc<CascadeOperation>>,
    tables: HashMap<u32, TableMerge>,
    table_order: Vec<u32>,
    /// Changes to tables without a key in this segment, per relation, in source order.
    keyless: HashMap<u32, KeylessChanges>,
    keyless_order: Vec<u32>,
    change_count: u64,
    operation_count: usize,
    /// About how many bytes the changes added since the last take hold (an upper bound: a
    /// key's replaced operations still count).
    byte_count: usize,
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many source changes were added since the last [`BatchBuilder::take`].
    pub fn change_count(&self) -> u64 {
        self.change_count
    }

    /// How many merged operations the batch holds (its memory grows with this).
    pub fn operation_count(&self) -> usize {
        self.operation_count
    }

    pub fn is_empty(&self) -> bool {
        self.change_count == 0
    }

    /// About how many bytes the batch holds (see [`StreamOptions`](crate::StreamOptions)).
    pub fn byte_count(&self) -> usize {
        self.byte_count
    }

    /// Adds one change, in source order.
    pub fn add(&mut self, change: Change) -> Result<()> {
        self.change_count += 1;
        self.byte_count += change_size(&change);
        if change.is_keyless_row() {
            return self.add_keyless(change);
        }
        match change {
            Change::Insert { relation, row } => {
                let key = self.key_of_row(&relation, &row)?;
                self.put(&relation, key, Operation::Upsert(row));
            }
            Change::Update {
                relation,
                old_key,
                row,
            } => {
                let key = self.key_of_row(&relation, &row)?;
                let moved_from = old_key.filter(|old| key_form(old) != key_form(&key));
                let partial = row.iter().any(Cell::is_unchanged);
                if let Some(old_key) = moved_from {
                    let old_form = key_form(&old_key);
                    let earlier_full = match self.table(&relation).operations.get(&old_form) {
                        Some((_, Operation::Upsert(earlier))) => Some(earlier.clone()),
                        _ => None,
                    };
                    match (partial, earlier_full) {
                        (false, _) => {
                            self.delete(&relation, old_key);
                            self.put(&relation, key, Operation::Upsert(row));
                        }
                        (true, Some(earlier)) => {
                            self.delete(&relation, old_key);
                            self.put(
                                &relation,
                                key,
                                Operation::Upsert(fill_unchanged(row, &earlier)),
                            );
                        }
                        (true, None) => {
                            // The row's other values are only on the target: move it there.
                            self.cut();
                            let mut table = TableChanges::new(relation.clone());
                            table.moves.push((old_key, row));
                            self.finished.push(Segment::Rows(vec![table]));
                            self.operation_count += 1;
                        }
                    }
                } else if partial {
                    let form = key_form(&key);
                    let merged = match self
                        .table(&relation)
                        .operations
                        .remove(&form)
                        .map(|(_, operation)| operation)
                    {
                        Some(Operation::Upsert(earlier)) => {
                            Operation::Upsert(fill_unchanged(row, &earlier))
                        }
                        Some(Operation::Update(earlier)) => {
                            Operation::Update(fill_unchanged(row, &earlier))
                        }
                        Some(deleted @ Operation::Delete(_)) => deleted,
                        None => {
                            self.operation_count += 1;
                            Operation::Update(row)
                        }
                    };
                    let sequence = self.change_count;
                    self.table(&relation)
                        .operations
                        .insert(form, (sequence, merged));
                } else {
                    self.put(&relation, key, Operation::Upsert(row));
                }
            }
            Change::Delete { relation, key } => {
                self.delete(&relation, key);
            }
            Change::Cascade(operation) => {
                let touched = operation.touched_tables();
                let pending = self
                    .tables
                    .values()
                    .any(|table| touched.contains(&table.relation.table))
                    || self
                        .keyless
                        .values()
                        .any(|table| touched.contains(&table.relation.table));
                if pending {
                    self.cut();
                }
                self.leading.push(operation);
                self.operation_count += 1;
            }
            Change::Truncate {
                relations,
                cascade,
                restart_identity,
            } => {
                self.cut();
                self.finished.push(Segment::Truncate {
                    relations,
                    cascade,
                    restart_identity,
                });
            }
        }
        Ok(())
    }

    /// Takes the batch built so far and starts an empty one.
    pub fn take(&mut self) -> Batch {
        self.cut();
        let batch = Batch {
            segments: std::mem::take(&mut self.finished),
            change_count: self.change_count,
            failed_tables: Vec::new(),
        };
        self.change_count = 0;
        self.operation_count = 0;
        self.byte_count = 0;
        batch
    }

    /// A change to a table without a key: kept as it is, in order.
    fn add_keyless(&mut self, change: Change) -> Result<()> {
        let whole = |relation: &Relation, row: Vec<Cell>| -> Result<Vec<Value>> {
            row.into_iter()
                .map(|cell| match cell {
                    Cell::Value(value) => Ok(value),
                    Cell::Unchanged => Err(Error::definite(
                        "stream.keyless_partial_row",
                        format!(
                            "a change to {} (a table without a key) left a value out of its row image",
                            relation.table
                        ),
                    )
                    .with_hint("on a PostgreSQL source, set ALTER TABLE ... REPLICA IDENTITY FULL for the table")),
                })
                .collect()
        };
        let (relation, keyless) = match change {
            Change::Insert { relation, row } => {
                let row = whole(&relation, row)?;
                (relation, KeylessChange::Insert(row))
            }
            Change::Update {
                relation,
                old_key: Some(old),
                row,
            } => {
                let new = whole(&relation, row)?;
                (relation, KeylessChange::Update { old, new })
            }
            Change::Update { relation, .. } => {
                return Err(Error::definite(
                    "stream.keyless_no_old_row",
                    format!(
                        "an update of {} (a table without a key) came without the old row, so the row to change cannot be found",
                        relation.table
                    ),
                )
                .with_hint("on a PostgreSQL source, set ALTER TABLE ... REPLICA IDENTITY FULL; on MySQL, binlog_row_image=FULL"))
            }
            Change::Delete { relation, key } => (relation, KeylessChange::Delete(key)),
            _ => unreachable!("only row changes are routed here"),
        };
        let id = relation.id;
        if self
            .keyless
            .get(&id)
            .is_some_and(|known| known.relation != relation)
        {
            // The same table with a new shape: what was recorded against the old one goes first.
            self.cut();
        }
        let order = &mut self.keyless_order;
        self.keyless
            .entry(id)
            .or_insert_with(|| {
                order.push(id);
                KeylessChanges {
                    relation,
                    changes: Vec::new(),
                }
            })
            .changes
            .push(keyless);
        self.operation_count += 1;
        Ok(())
    }

    fn table(&mut self, relation: &Arc<Relation>) -> &mut TableMerge {
        let id = relation.id;
        if !self.tables.contains_key(&id) || self.tables[&id].relation != *relation {
            // A new relation, or the same table with a new shape: earlier operations were made
            // against the old shape, so they go first.
            if self.tables.contains_key(&id) {
                self.cut();
            }
            self.tables.insert(
                id,
                TableMerge {
                    key_indexes: relation.key_indexes(),
                    relation: relation.clone(),
                    operations: HashMap::new(),
                },
            );
            self.table_order.push(id);
        }
        self.tables.get_mut(&id).expect("inserted above")
    }

    fn key_of_row(&mut self, relation: &Arc<Relation>, row: &[Cell]) -> Result<Vec<Value>> {
        let key_indexes = &self.table(relation).key_indexes;
        if key_indexes.is_empty() {
            return Err(Error::definite(
                "stream.no_key",
                format!("table {} has no key in the change stream", relation.table),
            )
            .with_hint("give the table a primary key on the source"));
        }
        key_indexes
            .iter()
            .map(|&index| match row.get(index) {
                Some(Cell::Value(value)) => Ok(value.clone()),
                _ => Err(Error::definite(
                    "stream.key_missing",
                    format!(
                        "a change to {} carries no value for key column {index}",
                        relation.table
                    ),
                )),
            })
            .collect()
    }

    fn delete(&mut self, relation: &Arc<Relation>, key: Vec<Value>) {
        let form = key_form(&key);
        self.insert(relation, form, Operation::Delete(key));
    }

    fn put(&mut self, relation: &Arc<Relation>, key: Vec<Value>, operation: Operation) {
        self.insert(relation, key_form(&key), operation);
    }

    fn insert(&mut self, relation: &Arc<Relation>, form: String, operation: Operation) {
        let sequence = self.change_count;
        if self
            .table(relation)
            .operations
            .insert(form, (sequence, operation))
            .is_none()
        {
            self.operation_count += 1;
        }
    }

    /// Ends the current segment: what follows applies after it.
    fn cut(&mut self) {
        if !self.leading.is_empty() {
            self.finished
                .push(Segment::Cascade(std::mem::take(&mut self.leading)));
        }
        let mut tables = Vec::new();
        for id in self.table_order.drain(..) {
            if let Some(table) = self.tables.remove(&id) {
                let mut changes = TableChanges::new(table.relation);
                // In the order of each key's last change, so that a value one row gives up and
                // another takes (a unique email moving between rows) is freed before it is taken.
                let mut operations: Vec<(u64, Operation)> =
                    table.operations.into_values().collect();
                operations.sort_unstable_by_key(|(sequence, _)| *sequence);
                for (_, operation) in operations {
                    match operation {
                        Operation::Upsert(row) => changes.upserts.push(row),
                        Operation::Update(row) => changes.updates.push(row),
                        Operation::Delete(key) => changes.deletes.push(key),
                    }
                }
                if !(changes.upserts.is_empty()
                    && changes.updates.is_empty()
                    && changes.deletes.is_empty())
                {
                    tables.push(changes);
                }
            }
        }
        if !tables.is_empty() {
            self.finished.push(Segment::Rows(tables));
        }
        let keyless: Vec<KeylessChanges> = self
            .keyless_order
            .drain(..)
            .filter_map(|id| self.keyless.remove(&id))
            .collect();
        if !keyless.is_empty() {
            self.finished.push(Segment::Keyless(keyless));
        }
    }
}

fn change_size(change: &Change) -> usize {
    let cells = |row: &[Cell]| -> usize {
        row.iter()
            .map(|cell| match cell {
                Cell::Value(value) => value.approximate_size(),
                Cell::Unchanged => 16,
            })
            .sum()
    };
    let values = |row: &[Value]| -> usize { row.iter().map(Value::approximate_size).sum() };
    match change {
        Change::Insert { row, .. } => cells(row),
        Change::Update { row, old_key, .. } => cells(row) + old_key.as_deref().map_or(0, values),
        Change::Delete { key, .. } => values(key),
        Change::Truncate { relations, .. } => 64 * relations.len(),
        Change::Cascade(operation) => {
            values(&operation.old) + operation.new.as_deref().map_or(0, values)
        }
    }
}

fn fill_unchanged(mut row: Vec<Cell>, earlier: &[Cell]) -> Vec<Cell> {
    for (cell, earlier_cell) in row.iter_mut().zip(earlier) {
        if cell.is_unchanged() {
            *cell = earlier_cell.clone();
        }
    }
    row
}

fn key_form(key: &[Value]) -> String {
    let mut form = String::new();
    for value in key {
        value.key_form(&mut form);
    }
    form
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::change::RelationColumn;
    use ferry_core::TableName;

    fn relation() -> Arc<Relation> {
        Arc::new(Relation {
            id: 1,
            table: TableName::new("public", "t"),
            columns: vec![
                RelationColumn {
                    type_signature: None,
                    name: "id".into(),
                    is_key: true,
                },
                RelationColumn {
                    type_signature: None,
                    name: "a".into(),
                    is_key: false,
                },
                RelationColumn {
                    type_signature: None,
                    name: "big".into(),
                    is_key: false,
                },
            ],
        })
    }

    fn row(id: i32, a: &str, big: Option<&str>) -> Vec<Cell> {
        vec![
            Cell::Value(Value::Int32(id)),
            Cell::Value(Value::Text(a.into())),
            big.map_or(Cell::Unchanged, |big| Cell::Value(Value::Text(big.into()))),
        ]
    }

    fn only_rows(batch: Batch) -> TableChanges {
        assert_eq!(batch.segments.len(), 1, "{batch:?}");
        match batch.segments.into_iter().next().unwrap() {
            Segment::Rows(mut tables) => {
                assert_eq!(tables.len(), 1);
                tables.remove(0)
            }
            other => panic!("unexpected segment {other:?}"),
        }
    }

    #[test]
    fn later_changes_win_per_key() {
        let relation = relation();
        let mut builder = BatchBuilder::new();
        builder
            .add(Change::Insert {
                relation: relation.clone(),
                row: row(1, "a", Some("x")),
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: None,
                row: row(1, "b", Some("y")),
            })
            .unwrap();
        builder
            .add(Change::Insert {
                relation: relation.clone(),
                row: row(2, "c", Some("z")),
            })
            .unwrap();
        builder
            .add(Change::Delete {
                relation: relation.clone(),
                key: vec![Value::Int32(2)],
            })
            .unwrap();
        assert_eq!(builder.change_count(), 4);
        let changes = only_rows(builder.take());
        assert_eq!(changes.upserts, vec![row(1, "b", Some("y"))]);
        assert_eq!(changes.deletes, vec![vec![Value::Int32(2)]]);
        assert!(changes.updates.is_empty());
        assert!(builder.is_empty());
    }

    #[test]
    fn unchanged_values_are_filled_from_an_earlier_full_image_and_never_invented() {
        let relation = relation();
        let mut builder = BatchBuilder::new();
        builder
            .add(Change::Insert {
                relation: relation.clone(),
                row: row(1, "a", Some("large")),
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: None,
                row: row(1, "b", None),
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: None,
                row: row(2, "c", None),
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: None,
                row: row(2, "d", None),
            })
            .unwrap();
        let changes = only_rows(builder.take());
        assert_eq!(changes.upserts, vec![row(1, "b", Some("large"))]);
        assert_eq!(changes.updates, vec![row(2, "d", None)]);
    }

    #[test]
    fn a_delete_then_insert_is_an_upsert_and_updates_after_delete_are_ignored() {
        let relation = relation();
        let mut builder = BatchBuilder::new();
        builder
            .add(Change::Delete {
                relation: relation.clone(),
                key: vec![Value::Int32(1)],
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: None,
                row: row(2, "x", None),
            })
            .unwrap();
        builder
            .add(Change::Delete {
                relation: relation.clone(),
                key: vec![Value::Int32(2)],
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: None,
                row: row(2, "y", None),
            })
            .unwrap();
        builder
            .add(Change::Insert {
                relation: relation.clone(),
                row: row(1, "new", Some("v")),
            })
            .unwrap();
        let changes = only_rows(builder.take());
        assert_eq!(changes.upserts, vec![row(1, "new", Some("v"))]);
        assert_eq!(changes.deletes, vec![vec![Value::Int32(2)]]);
        assert!(changes.updates.is_empty());
    }

    #[test]
    fn key_changes_delete_the_old_key() {
        let relation = relation();
        let mut builder = BatchBuilder::new();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: Some(vec![Value::Int32(1)]),
                row: row(5, "moved", Some("v")),
            })
            .unwrap();
        let changes = only_rows(builder.take());
        assert_eq!(changes.deletes, vec![vec![Value::Int32(1)]]);
        assert_eq!(changes.upserts, vec![row(5, "moved", Some("v"))]);
    }

    #[test]
    fn a_key_change_without_the_large_values_moves_the_row_on_its_own() {
        let relation = relation();
        let mut builder = BatchBuilder::new();
        builder
            .add(Change::Insert {
                relation: relation.clone(),
                row: row(9, "other", Some("v")),
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: Some(vec![Value::Int32(1)]),
                row: row(5, "moved", None),
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: None,
                row: row(5, "again", None),
            })
            .unwrap();
        let batch = builder.take();
        assert_eq!(batch.segments.len(), 3);
        match &batch.segments[1] {
            Segment::Rows(tables) => assert_eq!(
                tables[0].moves,
                vec![(vec![Value::Int32(1)], row(5, "moved", None))]
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncate_cuts_the_batch() {
        let relation = relation();
        let mut builder = BatchBuilder::new();
        builder
            .add(Change::Insert {
                relation: relation.clone(),
                row: row(1, "a", Some("x")),
            })
            .unwrap();
        builder
            .add(Change::Truncate {
                relations: vec![relation.clone()],
                cascade: false,
                restart_identity: false,
            })
            .unwrap();
        builder
            .add(Change::Insert {
                relation: relation.clone(),
                row: row(1, "b", Some("y")),
            })
            .unwrap();
        let batch = builder.take();
        assert_eq!(batch.segments.len(), 3);
        assert!(matches!(batch.segments[1], Segment::Truncate { .. }));
    }

    #[test]
    fn a_missing_key_value_is_an_error_not_a_panic() {
        let relation = relation();
        let mut builder = BatchBuilder::new();
        let error = builder
            .add(Change::Insert {
                relation,
                row: vec![Cell::Unchanged],
            })
            .unwrap_err();
        assert_eq!(error.code(), "stream.key_missing");
    }

    #[test]
    fn upserts_keep_the_order_of_each_keys_last_change() {
        let relation = relation();
        let mut builder = BatchBuilder::new();
        builder
            .add(Change::Insert {
                relation: relation.clone(),
                row: row(2, "z", Some("v")),
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: None,
                row: row(1, "y", Some("v")),
            })
            .unwrap();
        builder
            .add(Change::Update {
                relation: relation.clone(),
                old_key: None,
                row: row(2, "x", Some("v")),
            })
            .unwrap();
        let changes = only_rows(builder.take());
        assert_eq!(
            changes.upserts,
            vec![row(1, "y", Some("v")), row(2, "x", Some("v"))]
        );
    }

    #[test]
    fn a_cascade_cuts_only_when_rows_it_may_change_are_pending() {
        use ferry_core::schema::{ForeignKey, ReferentialAction};
        let parent = relation();
        let child = Arc::new(Relation {
            id: 2,
            table: TableName::new("public", "child"),
            ..(*relation()).clone()
        });
        let rules = Arc::new(vec![ForeignKey {
            name: "fk".into(),
            table: child.table.clone(),
            columns: vec!["a".into()],
            referenced_table: parent.table.clone(),
            referenced_columns: vec!["id".into()],
            on_delete: ReferentialAction::Cascade,
            on_update: ReferentialAction::NoAction,
        }]);
        let cascade = |id: i32| {
            Change::Cascade(Arc::new(CascadeOperation {
                relation: parent.clone(),
                old: vec![Value::Int32(id), Value::Text("x".into()), Value::Null],
                new: None,
                rules: rules.clone(),
            }))
        };
        let mut builder = BatchBuilder::new();
        // Parent rows only: the cascade goes ahead of them, in the same segment run.
        builder
            .add(Change::Delete {
                relation: parent.clone(),
                key: vec![Value::Int32(1)],
            })
            .unwrap();
        builder.add(cascade(1)).unwrap();
        // A child row, then a cascade that may change it: cut between them.
        builder
            .add(Change::Insert {
                relation: child.clone(),
                row: row(7, "2", Some("v")),
            })
            .unwrap();
        builder.add(cascade(2)).unwrap();
        let segments = builder.take().segments;
        let kinds: Vec<&str> = segments
            .iter()
            .map(|segment| match segment {
                Segment::Rows(_) => "rows",
                Segment::Cascade(_) => "cascade",
                Segment::Keyless(_) => "keyless",
                Segment::Truncate { .. } => "truncate",
            })
            .collect();
        assert_eq!(kinds, ["cascade", "rows", "cascade"]);
    }

    fn keyless_relation() -> Arc<Relation> {
        Arc::new(Relation {
            id: 9,
            table: TableName::new("public", "history"),
            columns: vec![
                RelationColumn {
                    type_signature: None,
                    name: "a".into(),
                    is_key: false,
                },
                RelationColumn {
                    type_signature: None,
                    name: "b".into(),
                    is_key: false,
                },
            ],
        })
    }

    #[test]
    fn changes_to_a_table_without_a_key_keep_their_order_and_their_duplicates() {
        let history = keyless_relation();
        let image = |a: i32| vec![Value::Int32(a), Value::Null];
        let cells = |a: i32| image(a).into_iter().map(Cell::Value).collect::<Vec<_>>();
        let mut builder = BatchBuilder::new();
        for _ in 0..2 {
            builder
                .add(Change::Insert {
                    relation: history.clone(),
                    row: cells(1),
                })
                .unwrap();
        }
        builder
            .add(Change::Update {
                relation: history.clone(),
                old_key: Some(image(1)),
                row: cells(2),
            })
            .unwrap();
        builder
            .add(Change::Insert {
                relation: relation(),
                row: row(1, "keyed", Some("x")),
            })
            .unwrap();
        builder
            .add(Change::Delete {
                relation: history.clone(),
                key: image(1),
            })
            .unwrap();
        // An update without its old row cannot find the row: refused, never guessed.
        assert!(builder
            .add(Change::Update {
                relation: history.clone(),
                old_key: None,
                row: cells(3),
            })
            .is_err());
        let segments = builder.take().segments;
        assert_eq!(segments.len(), 2, "{segments:?}");
        let Segment::Keyless(tables) = &segments[1] else {
            panic!("{segments:?}")
        };
        assert_eq!(
            tables[0].changes,
            vec![
                KeylessChange::Insert(image(1)),
                KeylessChange::Insert(image(1)),
                KeylessChange::Update {
                    old: image(1),
                    new: image(2)
                },
                KeylessChange::Delete(image(1)),
            ]
        );
    }
}
