//! The target's columns of each table as the writers need them (their kinds, which are
//! generated), read once per session and again when a column appears that they do not know;
//! and whether a table's key is its only unique index, read afresh each time it is asked.

use std::collections::HashMap;

use ferry_core::{Error, Result, TableName, TableSchema};
use mysql_async::prelude::Queryable;

use super::errors::classify;
use super::types::Kind;

/// A target column as the writer needs it.
#[derive(Debug, Clone)]
pub(crate) struct TargetColumn {
    pub kind: Kind,
    pub generated: bool,
}

/// The target's columns of each table, read once per session.
#[derive(Default)]
pub(crate) struct TargetColumns {
    tables: HashMap<String, HashMap<String, TargetColumn>>,
    /// The server refused `LOAD DATA LOCAL` on this session: apply by statements.
    pub(crate) local_load_refused: bool,
}

impl TargetColumns {
    /// The writable columns of `table` and the kinds of their target columns, or which one the
    /// target lacks.
    pub(crate) async fn writable<'a, Q: Queryable>(
        &mut self,
        conn: &mut Q,
        database: &str,
        table: &'a TableSchema,
    ) -> Result<(Vec<&'a str>, Vec<Kind>)> {
        let names: Vec<&str> = table
            .writable_columns()
            .map(|column| column.name.as_str())
            .collect();
        let target = self
            .covering(conn, database, &table.name.name, &names)
            .await?;
        let kinds = names
            .iter()
            .map(|name| {
                target
                    .get(*name)
                    .map(|column| column.kind.clone())
                    .ok_or_else(|| {
                        Error::operator(
                            "target.no_column",
                            format!(
                                "column {name} of {} does not exist on the target",
                                table.name
                            ),
                        )
                    })
            })
            .collect::<Result<_>>()?;
        Ok((names, kinds))
    }

    /// The target's columns of `table`, read again when one of `wanted` is not among those
    /// known (a column added since, by `add_columns` on another session).
    pub(crate) async fn covering<Q: Queryable>(
        &mut self,
        conn: &mut Q,
        database: &str,
        table: &str,
        wanted: &[&str],
    ) -> Result<&HashMap<String, TargetColumn>> {
        if self
            .tables
            .get(table)
            .is_some_and(|known| wanted.iter().any(|name| !known.contains_key(*name)))
        {
            self.tables.remove(table);
        }
        self.of(conn, database, table).await
    }

    pub(crate) async fn of<Q: Queryable>(
        &mut self,
        conn: &mut Q,
        database: &str,
        table: &str,
    ) -> Result<&HashMap<String, TargetColumn>> {
        if !self.tables.contains_key(table) {
            let rows: Vec<(String, String, String, Option<String>, String)> = conn
                .exec(
                    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (database, table),
                )
                .await
                .map_err(|error| classify(error, "reading the target's columns"))?;
            if rows.is_empty() {
                return Err(Error::operator(
                    "target.no_table",
                    format!("table {table} does not exist on the target"),
                )
                .with_table(TableName::new(database, table)));
            }
            let columns = rows
                .into_iter()
                .map(|(name, data_type, column_type, charset, extra)| {
                    let column = TargetColumn {
                        kind: Kind::of(&data_type, &column_type, charset.as_deref()),
                        generated: extra.to_ascii_lowercase().contains("generated"),
                    };
                    (name, column)
                })
                .collect();
            self.tables.insert(table.to_string(), columns);
        }
        Ok(&self.tables[table])
    }
}

/// True when `table`'s primary key is exactly `key` (any order) and it has no other unique
/// index: then `INSERT ... ON DUPLICATE KEY UPDATE` and `LOAD DATA ... REPLACE` can only
/// meet the row of the same key. Read afresh in the caller's transaction every time, after
/// a metadata lock on the table is taken (`SELECT ... LIMIT 0`): an index someone adds
/// meanwhile cannot appear before the transaction ends, and nothing stale is kept.
pub(crate) async fn key_is_the_only_unique<Q: Queryable>(
    conn: &mut Q,
    database: &str,
    table: &str,
    key: &[&str],
) -> Result<bool> {
    conn.query_drop(format!(
        "SELECT 1 FROM {} LIMIT 0",
        super::ddl::ident(table)
    ))
    .await
    .map_err(|error| classify(error, "locking the target table's definition"))?;
    let rows: Vec<(String, String)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0",
            (database, table),
        )
        .await
        .map_err(|error| classify(error, "reading the target's unique indexes"))?;
    let mut primary: Vec<&str> = rows
        .iter()
        .filter(|(index, _)| index == "PRIMARY")
        .map(|(_, column)| column.as_str())
        .collect();
    let mut wanted = key.to_vec();
    primary.sort_unstable();
    wanted.sort_unstable();
    let only = !primary.is_empty()
        && primary == wanted
        && rows.iter().all(|(index, _)| index == "PRIMARY");
    Ok(only)
}
