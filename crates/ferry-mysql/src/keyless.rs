//! Applying the changes of tables without a key ([`KeylessChanges`]) to MySQL, in source order:
//! runs of inserts as multi-row `INSERT`s, each update or delete on exactly one row found by its
//! whole old image (`<=>` on every written column, `LIMIT 1`), so duplicate rows stay
//! duplicates. Text compares in its charset's `_bin` collation (case counts), FLOAT in single
//! precision, JSON as documents.

use ferry_core::change::{KeylessChange, KeylessChanges};
use ferry_core::{Error, Result, Value};
use mysql_async::prelude::Queryable;
use tracing::warn;

use super::ddl::ident;
use super::errors::classify;
use super::target_columns::{TargetColumn, TargetColumns};
use super::types::Kind;
use super::values::literal;

const STATEMENT_BYTES: usize = 2 * 1024 * 1024;

/// Applies one table's changes, in order, inside the caller's transaction.
pub(crate) async fn apply_keyless<Q: Queryable>(
    conn: &mut Q,
    columns: &mut TargetColumns,
    database: &str,
    changes: &KeylessChanges,
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
    let mut written: Vec<(usize, &str, TargetColumn)> = Vec::new();
    for (index, column) in relation.columns.iter().enumerate() {
        let Some(found) = target.get(&column.name) else {
            return Err(Error::definite(
                "target.no_column",
                format!(
                    "column {} of {} does not exist on the target",
                    column.name, relation.table
                ),
            ));
        };
        if !found.generated {
            written.push((index, column.name.as_str(), found.clone()));
        }
    }
    let name = ident(&relation.table.name);
    let value = |row: &[Value], index: usize, column: &str, kind: &Kind| -> Result<String> {
        literal(&row[index], kind)
            .map_err(|error| error.context(format!("{}.{column}", relation.table)))
    };
    let matching = |row: &[Value]| -> Result<String> {
        let mut parts = Vec::new();
        for (index, column, target) in &written {
            let literal = value(row, *index, column, &target.kind)?;
            parts.push(match &target.kind {
                Kind::Float => format!("{} <=> CAST({literal} AS FLOAT)", ident(column)),
                Kind::Json => format!(
                    "JSON_EXTRACT({}, '$') <=> JSON_EXTRACT({literal}, '$')",
                    ident(column)
                ),
                // Case and accents count ('Foo' is not 'foo'): the column's charset compared
                // bytewise (its _bin collation pads, so CHAR's trailing spaces do not count, as
                // CHAR never returns them).
                Kind::Text { charset } => {
                    format!("{} COLLATE {charset}_bin <=> {literal}", ident(column))
                }
                Kind::Enum { .. } | Kind::Set { .. } => {
                    format!("BINARY {} <=> BINARY {literal}", ident(column))
                }
                _ => format!("{} <=> {literal}", ident(column)),
            });
        }
        Ok(parts.join(" AND "))
    };
    let prefix = format!(
        "INSERT INTO {name} ({}) VALUES ",
        written
            .iter()
            .map(|(_, column, _)| ident(column))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut inserts = String::new();
    for change in &changes.changes {
        if let KeylessChange::Insert(row) = change {
            inserts.push_str(if inserts.is_empty() { &prefix } else { "," });
            let values = written
                .iter()
                .map(|(index, column, target)| value(row, *index, column, &target.kind))
                .collect::<Result<Vec<_>>>()?;
            inserts.push_str(&format!("({})", values.join(",")));
            if inserts.len() >= STATEMENT_BYTES {
                conn.query_drop(std::mem::take(&mut inserts))
                    .await
                    .map_err(|error| classify(error, &what))?;
            }
            continue;
        }
        if !inserts.is_empty() {
            conn.query_drop(std::mem::take(&mut inserts))
                .await
                .map_err(|error| classify(error, &what))?;
        }
        let statement = match change {
            KeylessChange::Delete(old) => {
                format!("DELETE FROM {name} WHERE {} LIMIT 1", matching(old)?)
            }
            KeylessChange::Update { old, new } => {
                let assignments = written
                    .iter()
                    .map(|(index, column, target)| {
                        Ok(format!(
                            "{} = {}",
                            ident(column),
                            value(new, *index, column, &target.kind)?
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                format!(
                    "UPDATE {name} SET {} WHERE {} LIMIT 1",
                    assignments.join(", "),
                    matching(old)?
                )
            }
            KeylessChange::Insert(_) => unreachable!("handled above"),
        };
        let result = conn
            .query_iter(statement)
            .await
            .map_err(|error| classify(error, &what))?;
        let affected = result.affected_rows();
        result
            .drop_result()
            .await
            .map_err(|error| classify(error, &what))?;
        if affected == 0 {
            warn!(table = %relation.table, "a row to change or delete is not on the target: the table differs from the source (verify it, and copy it afresh if so)");
        }
    }
    if !inserts.is_empty() {
        conn.query_drop(inserts)
            .await
            .map_err(|error| classify(error, &what))?;
    }
    Ok(())
}
