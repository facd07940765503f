//! Reproducing foreign-key actions that a source did not log (MySQL and MariaDB perform
//! `ON DELETE CASCADE`, `SET NULL` and `ON UPDATE CASCADE` inside the storage engine and leave
//! the rows they change out of the binary log). The algorithm is shared by every SQL sink; a sink
//! supplies three set-based statements through [`CascadeTarget`].
//!
//! ```text
//!   parent row deleted / its referenced columns changed
//!     for each rule referencing the parent (in order):
//!       delete   cascade  -> read what the child's own children reference, recurse, delete
//!                set null -> read likewise, recurse as an update, set the columns to NULL
//!       update   cascade  -> read likewise, recurse, set the columns to the new values
//! ```
//!
//! Applied in source order (the merge cuts batches around it), over the target's state at that
//! point, so the target ends as the source did. A replay after a crash runs it over newer rows
//! too; every row it then wrongly touches was written again later in the stream, so the replay
//! converges like every other one. `SET DEFAULT` (InnoDB refuses it) and `RESTRICT`/`NO ACTION`
//! change nothing. Rows with NULL in a referencing column never match, as in SQL.

use std::collections::HashMap;

use async_trait::async_trait;
use ferry_core::change::CascadeOperation;
use ferry_core::schema::{ForeignKey, ReferentialAction};
use ferry_core::{Error, Result, TableName, Value};

/// Nesting deeper than this is refused rather than followed (a cycle of rules).
const MAX_DEPTH: usize = 64;

/// The statements a sink runs for cascades, inside its apply transaction. `keys` are value
/// lists in the order of `columns`; a sink compares them as the column types do.
#[async_trait]
pub trait CascadeTarget: Send {
    /// The values of `read` of every row of `table` whose `columns` equal one of `keys`.
    async fn select(
        &mut self,
        table: &TableName,
        read: &[String],
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>>;

    /// Deletes every row of `table` whose `columns` equal one of `keys`.
    async fn delete(
        &mut self,
        table: &TableName,
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<()>;

    /// For each (old, new) pair: sets `columns` to `new` in every row where they equal `old`.
    async fn update(
        &mut self,
        table: &TableName,
        columns: &[String],
        pairs: &[(Vec<Value>, Vec<Value>)],
    ) -> Result<()>;
}

/// Some columns of some rows of one table: column name to value, per row.
type Rows = Vec<HashMap<String, Value>>;

/// Applies the foreign-key actions of each operation, in order; an error says which change's.
pub async fn reproduce_all(
    target: &mut dyn CascadeTarget,
    operations: &[std::sync::Arc<CascadeOperation>],
) -> Result<()> {
    for operation in operations {
        reproduce(target, operation).await.map_err(|error| {
            error.context(format!(
                "reproducing the foreign-key actions of a change to {}",
                operation.relation.table
            ))
        })?;
    }
    Ok(())
}

/// An error of a statement on `table`: a definite one stops that table only.
pub fn on_table(error: Error, table: &TableName) -> Error {
    if error.class() == ferry_core::ErrorClass::Definite {
        error.with_table(table.clone())
    } else {
        error
    }
}

/// Applies the foreign-key actions of `operation`.
async fn reproduce(target: &mut dyn CascadeTarget, operation: &CascadeOperation) -> Result<()> {
    let names = &operation.relation.columns;
    let image = |row: &Vec<Value>| -> HashMap<String, Value> {
        names
            .iter()
            .zip(row)
            .map(|(column, value)| (column.name.clone(), value.clone()))
            .collect()
    };
    let old = vec![image(&operation.old)];
    let new = operation.new.as_ref().map(|row| vec![image(row)]);
    follow(
        target,
        &operation.rules,
        &operation.relation.table,
        old,
        new,
        0,
    )
    .await
}

/// The actions of every rule that references `table`, for these rows of it (deleted when `new`
/// is `None`, else changed row by row into `new`).
fn follow<'a>(
    target: &'a mut dyn CascadeTarget,
    rules: &'a [ForeignKey],
    table: &'a TableName,
    old: Rows,
    new: Option<Rows>,
    depth: usize,
) -> futures_util::future::BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            return Err(Error::definite(
                "apply.cascade_depth",
                format!("foreign-key actions from {table} go deeper than {MAX_DEPTH} tables"),
            ));
        }
        for rule in rules.iter().filter(|rule| rule.referenced_table == *table) {
            let mut deletes: Vec<Vec<Value>> = Vec::new();
            let mut updates: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
            for (index, old_row) in old.iter().enumerate() {
                let Some(old_key) = values(old_row, &rule.referenced_columns) else {
                    continue;
                };
                if old_key.iter().any(|value| matches!(value, Value::Null)) {
                    continue;
                }
                let nulls = vec![Value::Null; rule.columns.len()];
                match &new {
                    None => match rule.on_delete {
                        ReferentialAction::Cascade => deletes.push(old_key),
                        ReferentialAction::SetNull => updates.push((old_key, nulls)),
                        _ => {}
                    },
                    Some(new_rows) => {
                        let Some(new_key) = values(&new_rows[index], &rule.referenced_columns)
                        else {
                            continue;
                        };
                        if new_key == old_key {
                            continue;
                        }
                        match rule.on_update {
                            ReferentialAction::Cascade => updates.push((old_key, new_key)),
                            ReferentialAction::SetNull => updates.push((old_key, nulls)),
                            _ => {}
                        }
                    }
                }
            }
            deletes.dedup();
            updates.dedup();
            // What the child's own children reference, read before the child rows change.
            let read: Vec<String> = {
                let mut read: Vec<String> = rules
                    .iter()
                    .filter(|next| next.referenced_table == rule.table)
                    .flat_map(|next| next.referenced_columns.iter().cloned())
                    .collect();
                read.sort();
                read.dedup();
                read
            };
            if !deletes.is_empty() {
                if !read.is_empty() {
                    let rows = target
                        .select(&rule.table, &read, &rule.columns, &deletes)
                        .await?;
                    let children = named(&read, rows);
                    follow(target, rules, &rule.table, children, None, depth + 1).await?;
                }
                target.delete(&rule.table, &rule.columns, &deletes).await?;
            }
            if !updates.is_empty() {
                // Where the child's changed columns are referenced further down, read the rows
                // each pair changes first (one read per pair, so values compare as read).
                let further = read.iter().any(|column| rule.columns.contains(column));
                let mut before: Rows = Vec::new();
                let mut after: Rows = Vec::new();
                if further {
                    let mut read_with_key = read.clone();
                    for column in &rule.columns {
                        if !read_with_key.contains(column) {
                            read_with_key.push(column.clone());
                        }
                    }
                    for (old_key, new_key) in &updates {
                        let rows = target
                            .select(
                                &rule.table,
                                &read_with_key,
                                &rule.columns,
                                std::slice::from_ref(old_key),
                            )
                            .await?;
                        for row in named(&read_with_key, rows) {
                            let mut changed = row.clone();
                            for (column, value) in rule.columns.iter().zip(new_key) {
                                changed.insert(column.clone(), value.clone());
                            }
                            before.push(row);
                            after.push(changed);
                        }
                    }
                }
                target.update(&rule.table, &rule.columns, &updates).await?;
                if further {
                    follow(target, rules, &rule.table, before, Some(after), depth + 1).await?;
                }
            }
        }
        Ok(())
    })
}

fn values(row: &HashMap<String, Value>, columns: &[String]) -> Option<Vec<Value>> {
    columns
        .iter()
        .map(|column| row.get(column).cloned())
        .collect()
}

fn named(columns: &[String], rows: Vec<Vec<Value>>) -> Rows {
    rows.into_iter()
        .map(|row| columns.iter().cloned().zip(row).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::change::{Relation, RelationColumn};
    use std::sync::Arc;

    /// Tables in memory: name to rows of (column, value).
    #[derive(Default)]
    struct Memory {
        tables: HashMap<String, Vec<HashMap<String, Value>>>,
    }

    fn matches(row: &HashMap<String, Value>, columns: &[String], key: &[Value]) -> bool {
        columns
            .iter()
            .zip(key)
            .all(|(column, value)| row.get(column) == Some(value) && *value != Value::Null)
    }

    #[async_trait]
    impl CascadeTarget for Memory {
        async fn select(
            &mut self,
            table: &TableName,
            read: &[String],
            columns: &[String],
            keys: &[Vec<Value>],
        ) -> Result<Vec<Vec<Value>>> {
            Ok(self.tables[&table.name]
                .iter()
                .filter(|row| keys.iter().any(|key| matches(row, columns, key)))
                .map(|row| read.iter().map(|column| row[column].clone()).collect())
                .collect())
        }

        async fn delete(
            &mut self,
            table: &TableName,
            columns: &[String],
            keys: &[Vec<Value>],
        ) -> Result<()> {
            self.tables
                .get_mut(&table.name)
                .unwrap()
                .retain(|row| !keys.iter().any(|key| matches(row, columns, key)));
            Ok(())
        }

        async fn update(
            &mut self,
            table: &TableName,
            columns: &[String],
            pairs: &[(Vec<Value>, Vec<Value>)],
        ) -> Result<()> {
            for row in self.tables.get_mut(&table.name).unwrap() {
                if let Some((_, new)) = pairs.iter().find(|(old, _)| matches(row, columns, old)) {
                    for (column, value) in columns.iter().zip(new) {
                        row.insert(column.clone(), value.clone());
                    }
                }
            }
            Ok(())
        }
    }

    fn rule(table: &str, column: &str, parent: &str, delete: ReferentialAction) -> ForeignKey {
        ForeignKey {
            name: format!("{table}_{column}"),
            table: TableName::new("d", table),
            columns: vec![column.into()],
            referenced_table: TableName::new("d", parent),
            referenced_columns: vec!["id".into()],
            on_delete: delete,
            on_update: ReferentialAction::Cascade,
        }
    }

    fn row(pairs: &[(&str, i64)]) -> HashMap<String, Value> {
        pairs
            .iter()
            .map(|(column, value)| (column.to_string(), Value::Int64(*value)))
            .collect()
    }

    #[tokio::test]
    async fn deletes_cascade_to_any_depth_and_set_null_stops_there() {
        let mut memory = Memory::default();
        memory.tables.insert(
            "items".into(),
            vec![
                row(&[("id", 10), ("order_id", 1)]),
                row(&[("id", 11), ("order_id", 1)]),
                row(&[("id", 12), ("order_id", 2)]),
            ],
        );
        memory.tables.insert(
            "options".into(),
            vec![
                row(&[("id", 100), ("item_id", 10)]),
                row(&[("id", 101), ("item_id", 12)]),
            ],
        );
        memory
            .tables
            .insert("notes".into(), vec![row(&[("id", 7), ("order_id", 1)])]);
        let rules = Arc::new(vec![
            rule("items", "order_id", "orders", ReferentialAction::Cascade),
            rule("options", "item_id", "items", ReferentialAction::Cascade),
            rule("notes", "order_id", "orders", ReferentialAction::SetNull),
        ]);
        let relation = Arc::new(Relation {
            id: 1,
            table: TableName::new("d", "orders"),
            columns: vec![RelationColumn {
                type_signature: None,
                name: "id".into(),
                is_key: true,
            }],
        });
        let operation = CascadeOperation {
            relation: relation.clone(),
            old: vec![Value::Int64(1)],
            new: None,
            rules: rules.clone(),
        };
        reproduce(&mut memory, &operation).await.unwrap();
        assert_eq!(
            memory.tables["items"],
            vec![row(&[("id", 12), ("order_id", 2)])]
        );
        assert_eq!(
            memory.tables["options"],
            vec![row(&[("id", 101), ("item_id", 12)])]
        );
        assert_eq!(memory.tables["notes"][0]["order_id"], Value::Null);

        // A key change cascades to the referencing rows, and from them further down.
        let operation = CascadeOperation {
            relation,
            old: vec![Value::Int64(2)],
            new: Some(vec![Value::Int64(20)]),
            rules,
        };
        let mut renamed = Memory {
            tables: memory.tables.clone(),
        };
        reproduce(&mut renamed, &operation).await.unwrap();
        assert_eq!(
            renamed.tables["items"],
            vec![row(&[("id", 12), ("order_id", 20)])]
        );
        assert_eq!(
            renamed.tables["options"],
            vec![row(&[("id", 101), ("item_id", 12)])]
        );
    }
}
