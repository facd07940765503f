//! The PostgreSQL statements behind [`ferry_sql::cascade`]: set-based, with text-array parameters
//! cast to the target column types, inside the apply transaction (which runs as
//! `session_replication_role = replica`, so the target's own foreign keys do not act again).

use async_trait::async_trait;
use ferry_core::change::{Relation, RelationColumn};
use ferry_core::{Result, TableName, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

use super::codec::encode_text;
use super::ddl::ident;
use super::errors::classify;
use super::statements::{array_parameters, column_types, execute, own_rows, StatementCache};
use ferry_sql::cascade::{on_table, CascadeTarget};

pub(super) struct PostgresCascade<'a, 'b> {
    pub transaction: &'a Transaction<'b>,
    pub cache: &'a mut StatementCache,
}

impl PostgresCascade<'_, '_> {
    /// The target types of `columns` of `table` (checked to exist).
    async fn types(&mut self, table: &TableName, columns: &[&String]) -> Result<Vec<String>> {
        let relation = Relation {
            id: 0,
            table: table.clone(),
            columns: columns
                .iter()
                .map(|name| RelationColumn {
                    type_signature: None,
                    name: (*name).clone(),
                    is_key: false,
                })
                .collect(),
        };
        let types = column_types(self.transaction, self.cache, &relation)
            .await
            .map_err(|error| on_table(error, table))?;
        Ok(columns.iter().map(|name| types[*name].clone()).collect())
    }
}

/// `t.a = s.k0::type AND ...` for key columns named `k0, k1, ...` in the unnest.
fn matching(columns: &[String], types: &[String], prefix: &str) -> String {
    columns
        .iter()
        .zip(types)
        .enumerate()
        .map(|(index, (column, type_name))| {
            format!("t.{} = s.{prefix}{index}::{type_name}", ident(column))
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn aliases(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|index| format!("{prefix}{index}")).collect()
}

fn text_columns(keys: &[Vec<Value>], width: usize) -> Vec<Vec<Option<String>>> {
    (0..width)
        .map(|position| keys.iter().map(|key| encode_text(&key[position])).collect())
        .collect()
}

#[async_trait]
impl CascadeTarget for PostgresCascade<'_, '_> {
    async fn select(
        &mut self,
        table: &TableName,
        read: &[String],
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>> {
        let all: Vec<&String> = columns.iter().chain(read).collect();
        let types = self.types(table, &all).await?;
        let key_aliases = aliases("k", columns.len());
        let sql = format!(
            "SELECT {} FROM {} AS t, unnest({}) AS s({}) WHERE {}",
            read.iter()
                .map(|column| format!("t.{}::text", ident(column)))
                .collect::<Vec<_>>()
                .join(", "),
            own_rows(self.transaction, self.cache, table).await?,
            array_parameters(columns.len(), 0),
            key_aliases.join(", "),
            matching(columns, &types[..columns.len()], "k")
        );
        let parameters = text_columns(keys, columns.len());
        let parameters: Vec<&(dyn ToSql + Sync)> = parameters
            .iter()
            .map(|column| column as &(dyn ToSql + Sync))
            .collect();
        let rows = self
            .transaction
            .query(&sql, &parameters)
            .await
            .map_err(|error| {
                on_table(
                    classify(error, &format!("reading {table} for a cascade")),
                    table,
                )
            })?;
        Ok(rows
            .iter()
            .map(|row| {
                (0..read.len())
                    .map(|index| {
                        row.get::<_, Option<String>>(index)
                            .map_or(Value::Null, Value::Text)
                    })
                    .collect()
            })
            .collect())
    }

    async fn delete(
        &mut self,
        table: &TableName,
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<()> {
        let all: Vec<&String> = columns.iter().collect();
        let types = self.types(table, &all).await?;
        let sql = format!(
            "DELETE FROM {} AS t USING unnest({}) AS s({}) WHERE {}",
            own_rows(self.transaction, self.cache, table).await?,
            array_parameters(columns.len(), 0),
            aliases("k", columns.len()).join(", "),
            matching(columns, &types, "k")
        );
        execute(
            self.transaction,
            self.cache,
            &sql,
            &text_columns(keys, columns.len()),
        )
        .await
        .map_err(|error| on_table(error, table))
    }

    async fn update(
        &mut self,
        table: &TableName,
        columns: &[String],
        pairs: &[(Vec<Value>, Vec<Value>)],
    ) -> Result<()> {
        let all: Vec<&String> = columns.iter().collect();
        let types = self.types(table, &all).await?;
        let width = columns.len();
        let mut names = aliases("k", width);
        names.extend(aliases("n", width));
        let sql = format!(
            "UPDATE {} AS t SET {} FROM unnest({}) AS s({}) WHERE {}",
            own_rows(self.transaction, self.cache, table).await?,
            columns
                .iter()
                .zip(&types)
                .enumerate()
                .map(|(index, (column, type_name))| format!(
                    "{} = s.n{index}::{type_name}",
                    ident(column)
                ))
                .collect::<Vec<_>>()
                .join(", "),
            array_parameters(width * 2, 0),
            names.join(", "),
            matching(columns, &types, "k")
        );
        let olds: Vec<Vec<Value>> = pairs.iter().map(|(old, _)| old.clone()).collect();
        let news: Vec<Vec<Value>> = pairs.iter().map(|(_, new)| new.clone()).collect();
        let mut parameters = text_columns(&olds, width);
        parameters.extend(text_columns(&news, width));
        execute(self.transaction, self.cache, &sql, &parameters)
            .await
            .map_err(|error| on_table(error, table))
    }
}
