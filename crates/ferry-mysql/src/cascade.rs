//! The MySQL statements behind [`ferry_sql::cascade`]: keys as literals of the target column types,
//! in lists of at most [`KEYS_PER_STATEMENT`], inside the apply transaction (which runs with
//! `foreign_key_checks = 0`, so the target's own foreign keys do not act again).

use std::collections::HashMap;

use async_trait::async_trait;
use ferry_core::{Error, Result, TableName, Value};
use mysql_async::prelude::Queryable;

use super::ddl::ident;
use super::errors::classify;
use super::target_columns::{TargetColumn, TargetColumns};
use super::values::{decode, literal};
use ferry_sql::cascade::{on_table, CascadeTarget};

const KEYS_PER_STATEMENT: usize = 1_000;

pub(super) struct MysqlCascade<'a, Q> {
    pub conn: &'a mut Q,
    pub columns: &'a mut TargetColumns,
    pub database: &'a str,
}

impl<Q: Queryable + Send> MysqlCascade<'_, Q> {
    async fn target(&mut self, table: &TableName) -> Result<HashMap<String, TargetColumn>> {
        Ok(self
            .columns
            .of(self.conn, self.database, &table.name)
            .await?
            .clone())
    }
}

fn column<'a>(
    target: &'a HashMap<String, TargetColumn>,
    table: &TableName,
    name: &str,
) -> Result<&'a TargetColumn> {
    target.get(name).ok_or_else(|| {
        Error::definite(
            "apply.missing_column",
            format!("column {name} of {table} does not exist on the target"),
        )
        .with_table(table.clone())
    })
}

/// `(a = 1 AND b = 'x') OR (...)` for these keys.
fn key_list(
    target: &HashMap<String, TargetColumn>,
    table: &TableName,
    columns: &[String],
    keys: &[Vec<Value>],
) -> Result<String> {
    let mut alternatives = Vec::with_capacity(keys.len());
    for key in keys {
        let mut parts = Vec::with_capacity(columns.len());
        for (name, value) in columns.iter().zip(key) {
            let kind = &column(target, table, name)?.kind;
            parts.push(format!("{} = {}", ident(name), literal(value, kind)?));
        }
        alternatives.push(format!("({})", parts.join(" AND ")));
    }
    Ok(alternatives.join(" OR "))
}

#[async_trait]
impl<Q: Queryable + Send> CascadeTarget for MysqlCascade<'_, Q> {
    async fn select(
        &mut self,
        table: &TableName,
        read: &[String],
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>> {
        let target = self.target(table).await?;
        let kinds = read
            .iter()
            .map(|name| Ok(column(&target, table, name)?.kind.clone()))
            .collect::<Result<Vec<_>>>()?;
        let mut found = Vec::new();
        for part in keys.chunks(KEYS_PER_STATEMENT) {
            let sql = format!(
                "SELECT {} FROM {} WHERE {}",
                read.iter()
                    .map(|name| ident(name))
                    .collect::<Vec<_>>()
                    .join(", "),
                ident(&table.name),
                key_list(&target, table, columns, part)?
            );
            let rows: Vec<mysql_async::Row> = self.conn.query(sql).await.map_err(|error| {
                on_table(
                    classify(error, &format!("reading {table} for a cascade")),
                    table,
                )
            })?;
            for row in rows {
                let values = row.unwrap();
                found.push(
                    values
                        .into_iter()
                        .zip(&kinds)
                        .map(|(raw, kind)| decode(kind, raw, false))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
        }
        Ok(found)
    }

    async fn delete(
        &mut self,
        table: &TableName,
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<()> {
        let target = self.target(table).await?;
        for part in keys.chunks(KEYS_PER_STATEMENT) {
            let sql = format!(
                "DELETE FROM {} WHERE {}",
                ident(&table.name),
                key_list(&target, table, columns, part)?
            );
            self.conn.query_drop(sql).await.map_err(|error| {
                on_table(
                    classify(error, &format!("deleting from {table} for a cascade")),
                    table,
                )
            })?;
        }
        Ok(())
    }

    async fn update(
        &mut self,
        table: &TableName,
        columns: &[String],
        pairs: &[(Vec<Value>, Vec<Value>)],
    ) -> Result<()> {
        let target = self.target(table).await?;
        for (old, new) in pairs {
            let mut assignments = Vec::with_capacity(columns.len());
            for (name, value) in columns.iter().zip(new) {
                let kind = &column(&target, table, name)?.kind;
                assignments.push(format!("{} = {}", ident(name), literal(value, kind)?));
            }
            let sql = format!(
                "UPDATE {} SET {} WHERE {}",
                ident(&table.name),
                assignments.join(", "),
                key_list(&target, table, columns, std::slice::from_ref(old))?
            );
            self.conn.query_drop(sql).await.map_err(|error| {
                on_table(
                    classify(error, &format!("updating {table} for a cascade")),
                    table,
                )
            })?;
        }
        Ok(())
    }
}
