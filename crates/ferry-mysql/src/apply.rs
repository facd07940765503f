//! Applying merged change batches to MySQL: per table, one `DELETE` by primary key of every
//! deleted row, multi-row `INSERT`s of the full images (every column given, so `ON UPDATE
//! CURRENT_TIMESTAMP` keeps the source's value; foreign-key checks are off in ferry's sessions,
//! so nothing cascades), and single statements for partial images and key moves. All inside the
//! caller's transaction.
//!
//! A full image replaces its row in place (`ON DUPLICATE KEY UPDATE`, one row operation) when
//! the target's only unique index is the primary key on the source's key columns: then the
//! insert can collide with nothing but the row of the same key. Otherwise the rewritten rows
//! are deleted by key first and inserted plainly, so a clash on another unique index fails
//! loudly instead of `ON DUPLICATE KEY UPDATE` silently updating the other row.
//!
//! Many full images of such a table (a large transaction) go in by `LOAD DATA LOCAL ...
//! REPLACE` instead, which the server parses far more cheaply than multi-row statements: the
//! lines are registered in memory under a name of their own and served when the server asks
//! (`infile::register`). LOCAL turns a refused value into a warning, so the load counts only when
//! the server reports every line read, none skipped and no warning; anything else fails the
//! table's changes like a refused statement would (the transaction is rolled back). A server
//! that refuses LOCAL gets the statements for the rest of the session.

use ferry_core::change::{Batch, Segment, TableChanges};
use ferry_core::{Cell, Error, ErrorClass, Result, Value};
use mysql_async::prelude::Queryable;
use mysql_async::Transaction;

use super::ddl::ident;
use super::errors::classify;
use super::load;
use super::target_columns::{key_is_the_only_unique, TargetColumn, TargetColumns};
use super::types::Kind;
use super::values::literal;

const STATEMENT_BYTES: usize = 2 * 1024 * 1024;

/// Full images of one table in a batch from which `LOAD DATA ... REPLACE` replaces statements.
const LOAD_AT_LEAST: usize = 1_000;

/// A number the info line gives after `label` (`Records:`).
fn info_count(info: &str, label: &str) -> Option<u64> {
    let rest = &info[info.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Keys per `DELETE`: small enough that the range optimizer always resolves the list to index
/// lookups (a long `OR` list can exceed `range_optimizer_max_mem_size` and fall back to scanning
/// the whole table for every batch).
const KEYS_PER_DELETE: usize = 1_000;

pub(crate) async fn apply_batch(
    conn: &mut Transaction<'_>,
    columns: &mut TargetColumns,
    database: &str,
    batch: &Batch,
) -> Result<()> {
    for segment in &batch.segments {
        match segment {
            Segment::Rows(tables) => {
                for changes in tables {
                    let table = changes.relation.table.clone();
                    apply_table(conn, columns, database, changes)
                        .await
                        .map_err(|error| {
                            if error.class() == ErrorClass::Definite {
                                error.with_table(table)
                            } else {
                                error
                            }
                        })?;
                }
            }
            Segment::Keyless(tables) => {
                for changes in tables {
                    let table = changes.relation.table.clone();
                    super::keyless::apply_keyless(conn, columns, database, changes)
                        .await
                        .map_err(|error| {
                            if error.class() == ErrorClass::Definite {
                                error.with_table(table)
                            } else {
                                error
                            }
                        })?;
                }
            }
            Segment::Cascade(operations) => {
                let mut target = super::cascade::MysqlCascade {
                    conn: &mut *conn,
                    columns: &mut *columns,
                    database,
                };
                ferry_sql::cascade::reproduce_all(&mut target, operations).await?;
            }
            Segment::Truncate { relations, .. } => {
                for relation in relations {
                    conn.query_drop(format!("DELETE FROM {}", ident(&relation.table.name)))
                        .await
                        .map_err(|error| {
                            classify(error, &format!("emptying {} on the target", relation.table))
                        })?;
                }
            }
        }
    }
    Ok(())
}

struct Plan<'a> {
    table: String,
    names: Vec<&'a str>,
    targets: Vec<Option<TargetColumn>>,
    keys: Vec<usize>,
}

impl Plan<'_> {
    fn value(&self, index: usize, value: &Value) -> Result<String> {
        let kind = &self.targets[index]
            .as_ref()
            .expect("written columns exist")
            .kind;
        literal(value, kind)
            .map_err(|error| error.context(format!("{}.{}", self.table, self.names[index])))
    }

    fn key_match(&self, key: &[Value]) -> Result<String> {
        let mut parts = Vec::new();
        for (position, index) in self.keys.iter().enumerate() {
            parts.push(format!(
                "{} = {}",
                ident(self.names[*index]),
                self.value(*index, &key[position])?
            ));
        }
        Ok(parts.join(" AND "))
    }

    fn writes(&self, index: usize) -> bool {
        self.targets[index]
            .as_ref()
            .is_some_and(|column| !column.generated)
    }
}

async fn apply_table(
    conn: &mut Transaction<'_>,
    columns: &mut TargetColumns,
    database: &str,
    changes: &TableChanges,
) -> Result<()> {
    let relation = &changes.relation;
    let what = format!("applying changes to {} on the target", relation.table);
    let wanted: Vec<&str> = relation
        .columns
        .iter()
        .map(|column| column.name.as_str())
        .collect();
    let target = columns
        .covering(conn, database, &relation.table.name, &wanted)
        .await?
        .clone();
    let plan = Plan {
        table: relation.table.to_string(),
        names: relation
            .columns
            .iter()
            .map(|column| column.name.as_str())
            .collect(),
        targets: relation
            .columns
            .iter()
            .map(|column| target.get(&column.name).cloned())
            .collect(),
        keys: relation.key_indexes(),
    };
    if let Some(missing) = relation
        .columns
        .iter()
        .zip(&plan.targets)
        .find(|(_, target)| target.is_none())
    {
        return Err(Error::definite(
            "target.no_column",
            format!(
                "column {} of {} does not exist on the target",
                missing.0.name, relation.table
            ),
        ));
    }
    let name = ident(&relation.table.name);
    let key_names: Vec<&str> = plan.keys.iter().map(|index| plan.names[*index]).collect();
    // (Only full images care; the check reads the indexes afresh in this transaction.)
    let in_place = !changes.upserts.is_empty()
        && key_is_the_only_unique(conn, database, &relation.table.name, &key_names).await?;

    // Deletes, and (unless rows are replaced in place) the rows about to be rewritten.
    let upsert_keys = changes
        .upserts
        .iter()
        .map(|row| {
            plan.keys
                .iter()
                .map(|index| match &row[*index] {
                    Cell::Value(value) => Ok(value.clone()),
                    Cell::Unchanged => Err(Error::definite(
                        "apply.unchanged_key",
                        format!("{}: a key value is missing", plan.table),
                    )),
                })
                .collect::<Result<Vec<Value>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let rewritten: &[Vec<Value>] = if in_place { &[] } else { &upsert_keys };
    let keys: Vec<&Vec<Value>> = changes.deletes.iter().chain(rewritten).collect();
    for group in keys.chunks(KEYS_PER_DELETE) {
        conn.query_drop(delete_statement(&plan, &name, group)?)
            .await
            .map_err(|error| classify(error, &what))?;
    }

    // Full images: insert.
    let written: Vec<usize> = (0..plan.names.len())
        .filter(|index| plan.writes(*index))
        .collect();
    let prefix = format!(
        "INSERT INTO {name} ({}) VALUES ",
        written
            .iter()
            .map(|index| ident(plan.names[*index]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Every written column takes the new image's value (the key's own assignment keeps a
    // table of key columns only valid).
    let suffix = if in_place {
        format!(
            " ON DUPLICATE KEY UPDATE {}",
            written
                .iter()
                .map(|index| {
                    let column = ident(plan.names[*index]);
                    format!("{column} = VALUES({column})")
                })
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    // REPLACE writes whole rows: only where the target has no column besides those the images
    // carry and generated ones (a column kept after the source dropped it keeps its values
    // under ON DUPLICATE KEY UPDATE, and would lose them here).
    let images_cover_rows = target
        .iter()
        .all(|(name, column)| column.generated || wanted.contains(&name.as_str()));
    let loadable = in_place && images_cover_rows && changes.upserts.len() >= LOAD_AT_LEAST;
    let loaded = loadable
        && !columns.local_load_refused
        && replace_by_load(
            conn,
            &plan,
            &relation.table.name,
            &written,
            &changes.upserts,
            &what,
        )
        .await?;
    if loadable && !loaded {
        columns.local_load_refused = true;
    }
    let upserts: &[Vec<Cell>] = if loaded { &[] } else { &changes.upserts };
    let mut statement = String::new();
    for row in upserts {
        statement.push_str(if statement.is_empty() { &prefix } else { "," });
        statement.push('(');
        for (position, index) in written.iter().enumerate() {
            if position > 0 {
                statement.push(',');
            }
            match &row[*index] {
                Cell::Value(value) => statement.push_str(&plan.value(*index, value)?),
                Cell::Unchanged => {
                    return Err(Error::definite(
                        "apply.unchanged_in_upsert",
                        format!("{}: an upsert lacks a value", plan.table),
                    ))
                }
            }
        }
        statement.push(')');
        if statement.len() >= STATEMENT_BYTES {
            statement.push_str(&suffix);
            conn.query_drop(std::mem::take(&mut statement))
                .await
                .map_err(|error| classify(error, &what))?;
        }
    }
    if !statement.is_empty() {
        statement.push_str(&suffix);
        conn.query_drop(statement)
            .await
            .map_err(|error| classify(error, &what))?;
    }

    // Partial images (a PostgreSQL source leaves unchanged large values out) and key moves.
    for row in &changes.updates {
        let key: Vec<Value> = plan
            .keys
            .iter()
            .map(|index| match &row[*index] {
                Cell::Value(value) => Ok(value.clone()),
                Cell::Unchanged => Err(Error::definite(
                    "apply.unchanged_key",
                    format!("{}: a key value is missing", plan.table),
                )),
            })
            .collect::<Result<_>>()?;
        update(conn, &plan, &name, &key, row, &what).await?;
    }
    for (old_key, row) in &changes.moves {
        update(conn, &plan, &name, old_key, row, &what).await?;
    }
    Ok(())
}

/// Replaces rows by these full images with `LOAD DATA LOCAL ... REPLACE` (the table's only
/// unique index is its primary key). False when the server refuses LOCAL (nothing happened);
/// an error when it did not take every line exactly.
async fn replace_by_load(
    conn: &mut Transaction<'_>,
    plan: &Plan<'_>,
    table: &str,
    written: &[usize],
    upserts: &[Vec<Cell>],
    what: &str,
) -> Result<bool> {
    let kinds: Vec<Kind> = written
        .iter()
        .map(|index| {
            plan.targets[*index]
                .as_ref()
                .expect("written columns exist")
                .kind
                .clone()
        })
        .collect();
    let names: Vec<&str> = written.iter().map(|index| plan.names[*index]).collect();
    let mut lines = Vec::with_capacity(upserts.len() * 64);
    for row in upserts {
        if written.iter().any(|index| row[*index].is_unchanged()) {
            return Err(Error::definite(
                "apply.unchanged_in_upsert",
                format!("{}: an upsert lacks a value", plan.table),
            ));
        }
        let values = written.iter().filter_map(|index| match &row[*index] {
            Cell::Value(value) => Some(value),
            Cell::Unchanged => None,
        });
        load::push_line(values, &kinds, &mut lines).map_err(|(position, error)| {
            error.context(format!("{}.{}", plan.table, plan.names[written[position]]))
        })?;
    }
    let file = super::infile::register(lines);
    let statement = load::statement_from(file.name(), table, &names, &kinds, true);
    match conn.query_drop(statement).await {
        Err(mysql_async::Error::Server(server)) if load::LOCAL_REFUSED.contains(&server.code) => {
            return Ok(false)
        }
        Err(error) => return Err(classify(error, what)),
        Ok(()) => {}
    }
    // A replaced row counts twice in the affected rows: the info line counts lines.
    let info = conn.info().into_owned();
    let taken = info_count(&info, "Records:")
        .unwrap_or(0)
        .saturating_sub(info_count(&info, "Skipped:").unwrap_or(0));
    load::require_every_line(
        conn,
        &format!("{what} ({info})"),
        taken,
        upserts.len() as u64,
        "the transaction was rolled back",
    )
    .await?;
    Ok(true)
}

/// `DELETE` of the rows with these keys: `key IN (...)` for a one-column key, an `OR` of
/// per-column matches otherwise.
fn delete_statement(plan: &Plan<'_>, name: &str, keys: &[&Vec<Value>]) -> Result<String> {
    if let [column] = plan.keys[..] {
        let values = keys
            .iter()
            .map(|key| plan.value(column, &key[0]))
            .collect::<Result<Vec<_>>>()?;
        return Ok(format!(
            "DELETE FROM {name} WHERE {} IN ({})",
            ident(plan.names[column]),
            values.join(",")
        ));
    }
    let matches = keys
        .iter()
        .map(|key| Ok(format!("({})", plan.key_match(key)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(format!("DELETE FROM {name} WHERE {}", matches.join(" OR ")))
}

/// Sets the present, written columns of the row at `key`.
async fn update<Q: Queryable>(
    conn: &mut Q,
    plan: &Plan<'_>,
    name: &str,
    key: &[Value],
    row: &[Cell],
    what: &str,
) -> Result<()> {
    let mut sets = Vec::new();
    for (index, cell) in row.iter().enumerate() {
        if let (Cell::Value(value), true) = (cell, plan.writes(index)) {
            sets.push(format!(
                "{} = {}",
                ident(plan.names[index]),
                plan.value(index, value)?
            ));
        }
    }
    if sets.is_empty() {
        return Ok(());
    }
    conn.query_drop(format!(
        "UPDATE {name} SET {} WHERE {}",
        sets.join(", "),
        plan.key_match(key)?
    ))
    .await
    .map_err(|error| classify(error, what))
}
