//! An in-memory database that is a ferry source and a ferry target at once, for testing the
//! engine without servers: tables of rows, a log of committed transactions that a change
//! stream reads, ferry's state, and faults injected on demand.
//!
//! Contracts it keeps as a real connector must (see `ferry_core::connector`):
//! - Everything a sink call wrote is "durable" when it returns: each call changes the shared
//!   state under one lock, all or nothing, so dropping a future halfway (a kill) leaves either
//!   the whole effect or none.
//! - A batch and its checkpoint, and a chunk's rows and its done mark, change together.
//! - Positions are `Position::Marks` of kind `memory` with one counter, `transactions`: the
//!   number of transactions committed before. A transaction's `Begin { at }` and `Commit`
//!   position are both the count after it, so a snapshot taken at count `n` holds exactly the
//!   transactions with `at <= n`.
//! - The stream acknowledges by recording the position (`acknowledged()`), so a test can check
//!   that the source was never told more than the target held.
//!
//! Tables have keys; tables without one, cascades and sequences are not modelled (a batch with
//! them is refused with a definite error).

mod sink;
mod source;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use ferry_core::change::{Change, Relation, RelationColumn};
use ferry_core::schema::{Column, TableName, TableSchema};
use ferry_core::state::MigrationState;
use ferry_core::{Cell, Error, Marks, Position, Value};
use tokio::sync::watch;

pub use sink::MemorySink;
pub use source::MemorySource;

/// Makes the error a faulty call returns (errors are not `Clone`).
pub type Fault = Arc<dyn Fn() -> Error + Send + Sync>;

/// Which sink calls a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `ChunkWriter::write`.
    WriteChunk,
    /// `ChangeApplier::apply`, before anything is applied.
    Apply,
    /// `ChangeApplier::apply`, after the batch and its checkpoint were stored: the target has
    /// it, the caller hears of a failure (a commit whose answer was lost).
    ApplyThenFail,
}

/// A shared handle: clones see the same database.
#[derive(Clone)]
pub struct MemoryDatabase {
    state: Arc<Mutex<State>>,
    /// The number of committed transactions, for streams waiting for more.
    committed: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    tables: BTreeMap<TableName, Table>,
    /// Committed transactions, oldest first.
    log: Vec<Vec<Change>>,
    acknowledged: Option<Position>,
    migrations: BTreeMap<String, MigrationState>,
    failures: Vec<(String, i64, String, String)>,
    faults: Vec<(Operation, usize, Fault)>,
    /// How many batches the sink applied (whatever they held).
    applied_batches: u64,
    /// How often a migration lock was taken here (see `MemorySink`).
    generation: u64,
    /// How long each chunk write and batch apply takes (a slow target).
    latency: std::time::Duration,
}

struct Table {
    schema: TableSchema,
    relation: Arc<Relation>,
    /// Rows by the key form of their key values, in column order.
    rows: BTreeMap<String, Vec<Value>>,
}

impl Table {
    fn new(schema: TableSchema) -> Table {
        let relation = Arc::new(Relation {
            id: 0,
            table: schema.name.clone(),
            columns: schema
                .columns
                .iter()
                .map(|column| RelationColumn {
                    name: column.name.clone(),
                    is_key: schema.primary_key.contains(&column.name),
                    type_signature: None,
                })
                .collect(),
        });
        Table {
            schema,
            relation,
            rows: BTreeMap::new(),
        }
    }

    fn key_of(&self, row: &[Value]) -> Vec<Value> {
        self.schema
            .primary_key
            .iter()
            .map(|name| {
                let index = self
                    .schema
                    .columns
                    .iter()
                    .position(|column| &column.name == name)
                    .expect("key columns are columns");
                row[index].clone()
            })
            .collect()
    }
}

/// The key form of key values: equal keys, equal forms.
fn key_form(key: &[Value]) -> String {
    let mut form = String::new();
    for value in key {
        value.key_form(&mut form);
    }
    form
}

/// Orders key values as a database would: numbers as numbers, texts as texts.
pub(crate) fn compare_keys(left: &[Value], right: &[Value]) -> Ordering {
    for (left, right) in left.iter().zip(right) {
        let order = match (number(left), number(right)) {
            (Some(left), Some(right)) => left.cmp(&right),
            _ => key_form(std::slice::from_ref(left)).cmp(&key_form(std::slice::from_ref(right))),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    left.len().cmp(&right.len())
}

fn number(value: &Value) -> Option<i128> {
    match value {
        Value::Int16(value) => Some(i128::from(*value)),
        Value::Int32(value) => Some(i128::from(*value)),
        Value::Int64(value) => Some(i128::from(*value)),
        Value::UInt64(value) => Some(i128::from(*value)),
        _ => None,
    }
}

/// The memory position after `transactions` committed transactions.
pub fn position(transactions: u64) -> Position {
    Position::Marks(Marks {
        kind: "memory".into(),
        counters: BTreeMap::from([("transactions".to_string(), transactions)]),
        token: None,
    })
}

/// The transaction count of a memory position.
pub(crate) fn transactions_of(position: &Position) -> Result<u64, Error> {
    match position {
        Position::Marks(marks) if marks.kind == "memory" => {
            Ok(marks.counters.get("transactions").copied().unwrap_or(0))
        }
        other => Err(Error::definite(
            "source.position",
            format!("{other} is not a position of the memory source"),
        )),
    }
}

/// One change a test commits.
#[derive(Debug, Clone)]
pub enum Write {
    /// A new row (or a whole new image of the row with its key).
    Upsert(Vec<Value>),
    /// The row with this key is removed.
    Delete(Vec<Value>),
}

impl Default for MemoryDatabase {
    fn default() -> Self {
        MemoryDatabase::new()
    }
}

impl MemoryDatabase {
    pub fn new() -> MemoryDatabase {
        MemoryDatabase {
            state: Arc::new(Mutex::new(State::default())),
            committed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a table `public.<name>` of `columns` (all nullable text-like in the schema), the
    /// first `key_columns` of them its primary key.
    pub fn create_table(&self, name: &str, columns: &[&str], key_columns: usize) -> TableName {
        let table = TableName::new("public", name);
        let schema = TableSchema {
            name: table.clone(),
            dialect: "memory".into(),
            columns: columns
                .iter()
                .enumerate()
                .map(|(index, column)| Column {
                    name: column.to_string(),
                    native_type: "any".into(),
                    user_defined_type: false,
                    nullable: index >= key_columns,
                    default: None,
                    identity: None,
                    generated: None,
                    collation: None,
                    on_update: None,
                    generated_virtual: false,
                    comment: None,
                    type_signature: None,
                })
                .collect(),
            primary_key: columns[..key_columns]
                .iter()
                .map(|column| column.to_string())
                .collect(),
            primary_key_name: Some(format!("{name}_pkey")),
            checks: Vec::new(),
            secondary: Vec::new(),
            estimated_rows: 0,
            foreign_keys: Vec::new(),
            partitioning: None,
            comment: None,
        };
        self.lock().tables.insert(table.clone(), Table::new(schema));
        table
    }

    /// Commits one transaction of `writes` to `table`: applied to the rows and appended to the
    /// log, as a source database would. Returns the position after it.
    pub fn commit(&self, table: &TableName, writes: &[Write]) -> Position {
        let count = {
            let mut state = self.lock();
            let stored = state.tables.get_mut(table).expect("the table exists");
            let mut changes = Vec::with_capacity(writes.len());
            for write in writes {
                match write {
                    Write::Upsert(row) => {
                        let key = stored.key_of(row);
                        let cells = row.iter().cloned().map(Cell::Value).collect();
                        let change = match stored.rows.insert(key_form(&key), row.clone()) {
                            Some(_) => Change::Update {
                                relation: stored.relation.clone(),
                                old_key: None,
                                row: cells,
                            },
                            None => Change::Insert {
                                relation: stored.relation.clone(),
                                row: cells,
                            },
                        };
                        changes.push(change);
                    }
                    Write::Delete(key) => {
                        if stored.rows.remove(&key_form(key)).is_some() {
                            changes.push(Change::Delete {
                                relation: stored.relation.clone(),
                                key: key.clone(),
                            });
                        }
                    }
                }
            }
            state.log.push(changes);
            state.log.len() as u64
        };
        self.committed.send_replace(count);
        position(count)
    }

    /// The rows of `table`, ordered by key (empty when the table does not exist).
    pub fn rows(&self, table: &TableName) -> Vec<Vec<Value>> {
        let state = self.lock();
        let Some(stored) = state.tables.get(table) else {
            return Vec::new();
        };
        let mut rows: Vec<Vec<Value>> = stored.rows.values().cloned().collect();
        rows.sort_by(|left, right| compare_keys(&stored.key_of(left), &stored.key_of(right)));
        rows
    }

    /// The names of the tables.
    pub fn tables(&self) -> BTreeSet<TableName> {
        self.lock().tables.keys().cloned().collect()
    }

    /// The position after the last committed transaction.
    pub fn end(&self) -> Position {
        position(self.lock().log.len() as u64)
    }

    /// The last position a change stream acknowledged (as a source).
    pub fn acknowledged(&self) -> Option<Position> {
        self.lock().acknowledged.clone()
    }

    /// The state `migration` stored here (as a target).
    pub fn migration_state(&self, migration: &str) -> MigrationState {
        self.lock()
            .migrations
            .get(migration)
            .cloned()
            .unwrap_or_default()
    }

    /// The failures recorded here: (migration, code).
    pub fn failures(&self) -> Vec<(String, String)> {
        self.lock()
            .failures
            .iter()
            .map(|(migration, _, code, _)| (migration.clone(), code.clone()))
            .collect()
    }

    /// How many batches were applied here.
    pub fn applied_batches(&self) -> u64 {
        self.lock().applied_batches
    }

    /// The next `times` calls of `operation` fail with the error `fault` makes (after the
    /// faults already waiting).
    pub fn fail(&self, operation: Operation, times: usize, fault: Fault) {
        self.lock().faults.push((operation, times, fault));
    }

    /// Takes one fault for `operation`, if one waits.
    fn take_fault(state: &mut State, operation: Operation) -> Option<Error> {
        let index = state
            .faults
            .iter()
            .position(|(hit, times, _)| *hit == operation && *times > 0)?;
        let (_, times, fault) = &mut state.faults[index];
        *times -= 1;
        let error = fault();
        if *times == 0 {
            state.faults.remove(index);
        }
        Some(error)
    }

    /// Makes every chunk write and batch apply take this long.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.lock().latency = latency;
    }

    fn latency(&self) -> std::time::Duration {
        self.lock().latency
    }

    /// This database as a source.
    pub fn source(&self) -> MemorySource {
        MemorySource::new(self.clone())
    }

    /// This database as a target.
    pub fn sink(&self) -> MemorySink {
        MemorySink::new(self.clone())
    }
}
