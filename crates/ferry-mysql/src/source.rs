//! MySQL and MariaDB as a source.
//!
//! The stream needs nothing created on the server: it reads the binary log from a position.
//! The start position is taken so that every transaction the binary log holds before it is
//! visible to every later snapshot: on MariaDB, `binlog_snapshot_file/position` of a consistent
//! snapshot (no lock at all); on MySQL, `SHOW MASTER STATUS` under a brief
//! `FLUSH TABLES WITH READ LOCK`.

use async_trait::async_trait;
use ferry_core::connector::{ChangeStream, Snapshot, Source};
use ferry_core::schema::{Catalog, Sequence, TableName, TableSchema};
use ferry_core::select::Selection;
use ferry_core::{Error, Position, Result, Value};
use mysql_async::prelude::Queryable;

use super::binlog::{current_position, gtid_at, start_at_known_position};
use super::catalog::{auto_increment_sequence, read_catalog_for};
use super::cdc::BinlogChangeStream;
use super::config::MysqlConfig;
use super::connection::connect;
use super::ddl::ident;
use super::errors::classify;
use super::snapshot::MysqlSnapshot;

/// A MySQL or MariaDB source database.
pub struct MysqlSource {
    config: MysqlConfig,
}

impl MysqlSource {
    pub fn new(config: MysqlConfig) -> Self {
        MysqlSource { config }
    }
}

#[async_trait]
impl Source for MysqlSource {
    async fn read_catalog(&self, selection: &Selection) -> Result<Catalog> {
        let mut conn = connect(&self.config, true).await?;
        let catalog = read_catalog_for(&mut conn, &self.config, selection).await;
        let _ = conn.disconnect().await;
        catalog.map(|(catalog, _)| catalog)
    }

    async fn fetch_rows(
        &self,
        table: &TableName,
        key_columns: &[String],
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>> {
        let mut conn = connect(&self.config, true).await?;
        let what = format!("reading rows of {table}");
        let selection = Selection::default().restricted_to(std::slice::from_ref(table));
        let (catalog, _) = read_catalog_for(&mut conn, &self.config, &selection).await?;
        let schema = catalog
            .tables
            .into_iter()
            .find(|found| found.name == *table)
            .ok_or_else(|| {
                Error::definite(
                    "source.missing_table",
                    format!("{table} does not exist on the source"),
                )
            })?;
        let kinds = columns
            .iter()
            .map(|name| {
                schema
                    .column(name)
                    .map(super::catalog::kind_of)
                    .ok_or_else(|| {
                        Error::definite(
                            "source.missing_column",
                            format!("column {name} of {table} does not exist on the source"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            columns
                .iter()
                .map(|name| ident(name))
                .collect::<Vec<_>>()
                .join(", "),
            ident(&table.name),
            key_columns
                .iter()
                .map(|name| format!("{} = ?", ident(name)))
                .collect::<Vec<_>>()
                .join(" AND ")
        );
        let mut rows = Vec::new();
        for key in keys {
            let parameters: Vec<mysql_async::Value> =
                key.iter().map(super::values::param).collect();
            let found: Option<mysql_async::Row> = conn
                .exec_first(&sql, parameters)
                .await
                .map_err(|error| classify(error, &what))?;
            if let Some(row) = found {
                rows.push(
                    row.unwrap()
                        .into_iter()
                        .zip(&kinds)
                        .map(|(raw, kind)| super::values::decode(kind, raw, false))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
        }
        let _ = conn.disconnect().await;
        Ok(rows)
    }

    async fn create_stream(
        &self,
        _migration: &str,
        _tables: &[TableName],
    ) -> Result<(Position, Box<dyn Snapshot>)> {
        let mut conn = connect(&self.config, true).await?;
        let what = "taking the stream's start position";
        let start = start_at_known_position(&mut conn, what).await?;
        conn.query_drop("COMMIT")
            .await
            .map_err(|error| classify(error, what))?;
        let mut position = start.position;
        if let (true, Position::Mysql(binlog)) = (start.mariadb, &mut position) {
            binlog.gtid = gtid_at(&mut conn, &start.file, start.offset).await?;
        }
        let _ = conn.disconnect().await;
        Ok((
            position,
            Box::new(MysqlSnapshot {
                config: self.config.clone(),
            }),
        ))
    }

    async fn update_stream(&self, _migration: &str, _tables: &[TableName]) -> Result<()> {
        Ok(())
    }

    async fn open_stream(
        &self,
        migration: &str,
        position: Position,
        tables: &[TableSchema],
        ignore_writes_of: &[String],
    ) -> Result<Box<dyn ChangeStream>> {
        let Position::Mysql(position) = position else {
            return Err(position.from_another_source("MySQL binary log position"));
        };
        Ok(Box::new(
            BinlogChangeStream::open(&self.config, migration, position, tables, ignore_writes_of)
                .await?,
        ))
    }

    /// Every chunk gets its own snapshot; readers report positions where a table needs them.
    async fn fresh_snapshot(&self, _exact: bool) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(MysqlSnapshot {
            config: self.config.clone(),
        }))
    }

    async fn read_sequences(&self, sequences: &[TableName]) -> Result<Vec<Sequence>> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = connect(&self.config, true).await?;
        // Only the AUTO_INCREMENT columns: this runs every few seconds while streaming.
        let columns: Vec<(String, String, Option<u64>)> = conn
            .exec(
                "SELECT c.TABLE_NAME, c.COLUMN_NAME, t.AUTO_INCREMENT FROM information_schema.COLUMNS c
                 JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
                 WHERE c.TABLE_SCHEMA = ? AND c.EXTRA LIKE '%auto_increment%'",
                (self.config.database(),),
            )
            .await
            .map_err(|error| classify(error, "reading the AUTO_INCREMENT columns"))?;
        let database = self.config.database();
        let mut result = Vec::new();
        for mut sequence in columns
            .iter()
            .map(|(table, column, next)| auto_increment_sequence(database, table, column, *next))
            .filter(|sequence| sequences.contains(&sequence.name))
        {
            if let Some((table, column)) = &sequence.owned_by {
                let maximum: Option<Option<i64>> = conn
                    .query_first(format!(
                        "SELECT MAX({}) FROM {}",
                        ident(column),
                        ident(&table.name)
                    ))
                    .await
                    .map_err(|error| {
                        classify(error, "reading an AUTO_INCREMENT column's maximum")
                    })?;
                sequence.last_value = maximum.flatten().or(sequence.last_value);
            }
            result.push(sequence);
        }
        Ok(result)
    }

    async fn current_position(&self) -> Result<Position> {
        let mut conn = connect(&self.config, true).await?;
        let position = current_position(&mut conn).await;
        let _ = conn.disconnect().await;
        position
    }
}
