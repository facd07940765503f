//! Change events read from a source's log, and the merged batches a sink applies.

use std::sync::Arc;

use crate::position::Position;
use crate::schema::TableName;
use crate::value::{Cell, Value};

/// A table as the change log describes it: the columns a row image carries, in image order,
/// and which of them form the key that identifies a row. A relation without key columns is a
/// table without a key: its rows are identified by their whole image, duplicates included.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// The source's identifier for the table; stable for the life of the table.
    pub id: u32,
    pub table: TableName,
    pub columns: Vec<RelationColumn>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    pub name: String,
    pub is_key: bool,
    /// The type's identity as the log describes it (see `Column::type_signature`), if any.
    pub type_signature: Option<String>,
}

impl Relation {
    /// Positions of the key columns within a row image.
    pub fn key_indexes(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, column)| column.is_key)
            .map(|(index, _)| index)
            .collect()
    }

    /// True for a table without a key (see [`KeylessChanges`]).
    pub fn is_keyless(&self) -> bool {
        !self.columns.iter().any(|column| column.is_key)
    }
}

/// One row change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A new row; every cell is a value.
    Insert {
        relation: Arc<Relation>,
        row: Vec<Cell>,
    },
    /// A changed row. `row` is the new image, where unchanged large values may be
    /// [`Cell::Unchanged`]. `old_key` is set when the key changed (the row moved). For a table
    /// without a key, `old_key` is always the whole old row and `row` has no unchanged cell.
    Update {
        relation: Arc<Relation>,
        old_key: Option<Vec<Value>>,
        row: Vec<Cell>,
    },
    /// A removed row, identified by its key values in key order (for a table without a key: the
    /// whole old row, in relation column order).
    Delete {
        relation: Arc<Relation>,
        key: Vec<Value>,
    },
    /// Every row of these tables removed.
    Truncate {
        relations: Vec<Arc<Relation>>,
        cascade: bool,
        restart_identity: bool,
    },
    /// Rows of other tables that the source changed through foreign-key actions without logging
    /// them (MySQL and MariaDB leave cascades out of the binary log): the row `old` of
    /// `relation` was deleted (`new` is `None`) or became `new`, and the sink applies `rules`
    /// from there down, as the source did.
    Cascade(Arc<CascadeOperation>),
}

impl Change {
    /// True for a row change (insert, update, delete) of a table without a key: such changes
    /// are applied in order, never merged (see [`KeylessChanges`]).
    pub fn is_keyless_row(&self) -> bool {
        match self {
            Change::Insert { relation, .. }
            | Change::Update { relation, .. }
            | Change::Delete { relation, .. } => relation.is_keyless(),
            _ => false,
        }
    }
}

/// A deleted or changed row whose foreign-key actions a sink must reproduce.
#[derive(Debug, Clone, PartialEq)]
pub struct CascadeOperation {
    pub relation: Arc<Relation>,
    /// The whole old row, in relation column order.
    pub old: Vec<Value>,
    /// The whole new row of an update; `None` for a delete.
    pub new: Option<Vec<Value>>,
    /// Every foreign key between migrated tables whose actions change rows (cascade, set null,
    /// set default), to follow from `relation` down to any depth.
    pub rules: Arc<Vec<crate::schema::ForeignKey>>,
}

impl CascadeOperation {
    /// The tables the actions may change: every table reachable from `relation` through
    /// `rules`.
    pub fn touched_tables(&self) -> std::collections::BTreeSet<TableName> {
        self.reachable_from(&self.relation.table)
    }

    /// Every table `rules` lead to from `table` (its children, theirs, and so on).
    pub fn reachable_from(&self, table: &TableName) -> std::collections::BTreeSet<TableName> {
        let mut reached = std::collections::BTreeSet::new();
        let mut frontier = vec![table.clone()];
        while let Some(table) = frontier.pop() {
            for rule in self
                .rules
                .iter()
                .filter(|rule| rule.referenced_table == table)
            {
                if reached.insert(rule.table.clone()) {
                    frontier.push(rule.table.clone());
                }
            }
        }
        reached
    }
}

/// What a change stream yields, in source commit order.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A source transaction starts. `at` places it against snapshots: a snapshot that is exact
    /// at position `S` (see [`ChunkReader::snapshot_position`](crate::connector::ChunkReader))
    /// contains the transaction if and only if `at <= S`, and so does a checkpoint `S`. `None`
    /// when the source cannot tell (then tables without a key cannot be streamed from it).
    Begin { at: Option<Position> },
    /// A change inside the current transaction.
    Change(Change),
    /// The current transaction committed; `position` is where a stream resumes after it.
    Commit {
        position: Position,
        commit_time_unix_micros: i64,
    },
    /// The source has sent everything before `position` and nothing in it concerns us: when no
    /// transaction is open and everything received is durable, the position may be acknowledged.
    Idle { position: Position },
    /// A table's columns changed on the source (the log describes its rows with `relation`
    /// from here on): the changes before this event are applied first, then the target is
    /// brought to the new shape where it can be (columns added), before any change after it.
    SchemaChanged { relation: Arc<Relation> },
    /// Writes on the source were fenced before `position` (a cutover waits for the target to get
    /// there): everything before it is in the stream. Store it at once.
    Fence { position: Position },
}

/// Changes merged per key, ready for a sink. Segments apply in order; within a segment the
/// order of tables and of keys does not matter, because every key appears at most once.
#[derive(Debug, Default)]
pub struct Batch {
    pub segments: Vec<Segment>,
    /// How many source changes the batch covers (for metrics).
    pub change_count: u64,
    /// Tables to mark failed in the same transaction, with the reason: the batch no longer
    /// carries their changes.
    pub failed_tables: Vec<(TableName, String)>,
}

impl Batch {
    /// Removes every change to these tables (cascades keep going through the other tables).
    pub fn without(&mut self, tables: &std::collections::HashSet<TableName>) {
        if tables.is_empty() {
            return;
        }
        for segment in &mut self.segments {
            match segment {
                Segment::Rows(changes) => {
                    changes.retain(|table| !tables.contains(&table.relation.table))
                }
                Segment::Truncate { relations, .. } => {
                    relations.retain(|relation| !tables.contains(&relation.table))
                }
                Segment::Keyless(changes) => {
                    changes.retain(|table| !tables.contains(&table.relation.table))
                }
                Segment::Cascade(operations) => {
                    for operation in operations.iter_mut() {
                        if operation
                            .rules
                            .iter()
                            .any(|rule| tables.contains(&rule.table))
                        {
                            let mut narrowed = (**operation).clone();
                            narrowed.rules = Arc::new(
                                operation
                                    .rules
                                    .iter()
                                    .filter(|rule| !tables.contains(&rule.table))
                                    .cloned()
                                    .collect(),
                            );
                            *operation = Arc::new(narrowed);
                        }
                    }
                }
            }
        }
        self.segments.retain(|segment| match segment {
            Segment::Rows(changes) => !changes.is_empty(),
            Segment::Truncate { relations, .. } => !relations.is_empty(),
            Segment::Cascade(operations) => !operations.is_empty(),
            Segment::Keyless(changes) => !changes.is_empty(),
        });
    }

    /// The tables the batch's cascades reach only through one of `failed`: skipping a failed
    /// table's changes also skips the actions that go on from its rows, so those tables drift
    /// and must be copied afresh too.
    pub fn reached_through(
        &self,
        failed: &std::collections::HashSet<TableName>,
    ) -> std::collections::BTreeSet<TableName> {
        let mut reached = std::collections::BTreeSet::new();
        for segment in &self.segments {
            let Segment::Cascade(operations) = segment else {
                continue;
            };
            for operation in operations {
                for rule in operation
                    .rules
                    .iter()
                    .filter(|rule| failed.contains(&rule.table))
                {
                    reached.extend(
                        operation
                            .reachable_from(&rule.table)
                            .into_iter()
                            .filter(|table| !failed.contains(table)),
                    );
                }
            }
        }
        reached
    }

    /// Every table the batch writes (cascades: the tables their actions may change).
    pub fn tables(&self) -> Vec<TableName> {
        let mut tables: Vec<TableName> = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Rows(changes) => {
                    tables.extend(changes.iter().map(|changes| changes.relation.table.clone()))
                }
                Segment::Keyless(changes) => {
                    tables.extend(changes.iter().map(|changes| changes.relation.table.clone()))
                }
                Segment::Truncate { relations, .. } => {
                    tables.extend(relations.iter().map(|relation| relation.table.clone()))
                }
                Segment::Cascade(operations) => {
                    for operation in operations {
                        tables.extend(operation.touched_tables());
                    }
                }
            }
        }
        tables.sort();
        tables.dedup();
        tables
    }
}

#[derive(Debug)]
pub enum Segment {
    Rows(Vec<TableChanges>),
    Truncate {
        relations: Vec<Arc<Relation>>,
        cascade: bool,
        restart_identity: bool,
    },
    /// Foreign-key actions to reproduce, in order.
    Cascade(Vec<Arc<CascadeOperation>>),
    /// Changes to tables without a key, each table's in source order (tables are independent).
    Keyless(Vec<KeylessChanges>),
}

/// The changes to one table without a key, in source order. Nothing is merged: each change
/// touches exactly one row, found by its whole old image, so duplicate rows stay duplicates
/// and an update or delete of one of several identical rows changes exactly one.
#[derive(Debug)]
pub struct KeylessChanges {
    pub relation: Arc<Relation>,
    pub changes: Vec<KeylessChange>,
}

/// One change to a table without a key; rows are whole images in relation column order.
#[derive(Debug, Clone, PartialEq)]
pub enum KeylessChange {
    Insert(Vec<Value>),
    /// One row equal to `old` becomes `new`.
    Update {
        old: Vec<Value>,
        new: Vec<Value>,
    },
    /// One row equal to the image is removed.
    Delete(Vec<Value>),
}

impl TableChanges {
    /// No changes yet to `relation`.
    pub fn new(relation: Arc<Relation>) -> Self {
        TableChanges {
            relation,
            upserts: Vec::new(),
            updates: Vec::new(),
            deletes: Vec::new(),
            moves: Vec::new(),
        }
    }
}

/// The merged effect of a run of changes on one table: each key is in at most one list.
#[derive(Debug)]
pub struct TableChanges {
    pub relation: Arc<Relation>,
    /// Full row images to insert or overwrite.
    pub upserts: Vec<Vec<Cell>>,
    /// Row images with at least one [`Cell::Unchanged`]: update the present columns of an
    /// existing row, leave the rest as they are, and do nothing when the row is absent.
    pub updates: Vec<Vec<Cell>>,
    /// Keys to delete; deleting an absent row is not an error.
    pub deletes: Vec<Vec<Value>>,
    /// Rows whose key changed while some values were left out of the image: (old key, new
    /// image). The row at the old key takes the new key and the present values and keeps the
    /// rest; nothing happens when it is absent.
    pub moves: Vec<(Vec<Value>, Vec<Cell>)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ForeignKey, ReferentialAction};

    fn rule(child: &str, parent: &str) -> ForeignKey {
        ForeignKey {
            name: format!("{child}_fk"),
            table: TableName::new("d", child),
            columns: vec!["parent_id".into()],
            referenced_table: TableName::new("d", parent),
            referenced_columns: vec!["id".into()],
            on_delete: ReferentialAction::Cascade,
            on_update: ReferentialAction::NoAction,
        }
    }

    #[test]
    fn tables_reached_only_through_a_failed_one_are_named() {
        let relation = Arc::new(Relation {
            id: 1,
            table: TableName::new("d", "orders"),
            columns: Vec::new(),
        });
        let rules = Arc::new(vec![
            rule("items", "orders"),
            rule("options", "items"),
            rule("notes", "orders"),
        ]);
        let batch = Batch {
            segments: vec![Segment::Cascade(vec![Arc::new(CascadeOperation {
                relation,
                old: Vec::new(),
                new: None,
                rules,
            })])],
            ..Batch::default()
        };
        let failed = std::collections::HashSet::from([TableName::new("d", "items")]);
        let reached: Vec<TableName> = batch.reached_through(&failed).into_iter().collect();
        assert_eq!(reached, vec![TableName::new("d", "options")]);
        assert!(batch
            .reached_through(&std::collections::HashSet::new())
            .is_empty());
    }
}
