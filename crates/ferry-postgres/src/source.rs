//! PostgreSQL as a source.

use async_trait::async_trait;
use ferry_core::connector::{ChangeStream, Snapshot, Source};
use ferry_core::schema::{Catalog, Sequence};
use ferry_core::select::Selection;
use ferry_core::{Error, Lsn, Position, Result, TableName, TableSchema, Value};

use super::codec::{decode_text, encode_text};
use super::ddl::{ident, qualified};

use super::catalog;
use super::cdc;
use super::config::ConnectionConfig;
use super::connection::{connect, ReusedConnection};
use super::errors::classify;
use super::snapshot::{PostgresSnapshot, SnapshotHolder};

/// A PostgreSQL source.
pub struct PostgresSource {
    config: ConnectionConfig,
    /// For `current_position`, which lag sampling calls every second or faster.
    polling: ReusedConnection,
}

impl PostgresSource {
    pub fn new(config: ConnectionConfig) -> Self {
        PostgresSource {
            polling: ReusedConnection::new(config.clone()),
            config,
        }
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn read_catalog(&self, selection: &Selection) -> Result<Catalog> {
        catalog::read_catalog(&connect(&self.config).await?, selection).await
    }

    async fn fetch_rows(
        &self,
        table: &TableName,
        key_columns: &[String],
        columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>> {
        let client = connect(&self.config).await?;
        let what = format!("reading rows of {table}");
        let types: std::collections::HashMap<String, (String, u32)> = client
            .query(
                "SELECT attname::text, format_type(atttypid, NULL), atttypid FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped",
                &[&qualified(table)],
            )
            .await
            .map_err(|error| classify(error, &what))?
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect();
        let type_of = |column: &String| {
            types.get(column).cloned().ok_or_else(|| {
                Error::definite(
                    "source.missing_column",
                    format!("column {column} of {table} does not exist on the source"),
                )
            })
        };
        let read: Vec<String> = columns
            .iter()
            .map(|column| format!("{}::text", ident(column)))
            .collect();
        let matching: Vec<String> = key_columns
            .iter()
            .enumerate()
            .map(|(index, column)| {
                Ok(format!(
                    "{} = ${}::text::{}",
                    ident(column),
                    index + 1,
                    type_of(column)?.0
                ))
            })
            .collect::<Result<_>>()?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            read.join(", "),
            super::ddl::own_rows_on(&client, table).await?,
            matching.join(" AND ")
        );
        let oids: Vec<u32> = columns
            .iter()
            .map(|column| Ok(type_of(column)?.1))
            .collect::<Result<_>>()?;
        let mut rows = Vec::new();
        for key in keys {
            let parameters: Vec<Option<String>> = key.iter().map(encode_text).collect();
            let parameters: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = parameters
                .iter()
                .map(|value| value as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            if let Some(row) = client
                .query_opt(&sql, &parameters)
                .await
                .map_err(|error| classify(error, &what))?
            {
                rows.push(
                    oids.iter()
                        .enumerate()
                        .map(|(index, oid)| {
                            row.get::<_, Option<String>>(index)
                                .map_or(Value::Null, |text| decode_text(*oid, &text))
                        })
                        .collect(),
                );
            }
        }
        Ok(rows)
    }

    async fn create_stream(
        &self,
        migration: &str,
        tables: &[TableName],
    ) -> Result<(Position, Box<dyn Snapshot>)> {
        let client = connect(&self.config).await?;
        cdc::drop_leftover_slot(&client, migration).await?;
        cdc::sync_publication(&client, migration, tables).await?;
        let (position, snapshot_id, session) = cdc::create_slot(&self.config, migration).await?;
        Ok((
            Position::Postgres(position),
            Box::new(PostgresSnapshot::new(
                self.config.clone(),
                snapshot_id,
                SnapshotHolder::Slot(session),
                Some(Position::Postgres(position)),
            )),
        ))
    }

    async fn update_stream(&self, migration: &str, tables: &[TableName]) -> Result<()> {
        let client = connect(&self.config).await?;
        cdc::require_slot(&client, migration).await?;
        cdc::sync_publication(&client, migration, tables).await
    }

    async fn open_stream(
        &self,
        migration: &str,
        position: Position,
        tables: &[TableSchema],
        ignore_writes_of: &[String],
    ) -> Result<Box<dyn ChangeStream>> {
        let Position::Postgres(lsn) = position else {
            return Err(position.from_another_source("PostgreSQL position"));
        };
        let keys = tables
            .iter()
            .map(|table| (table.name.clone(), table.primary_key.clone()))
            .collect();
        Ok(Box::new(
            cdc::open(&self.config, migration, lsn, keys, ignore_writes_of).await?,
        ))
    }

    async fn fresh_snapshot(&self, exact: bool) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(
            PostgresSnapshot::fresh(&self.config, exact).await?,
        ))
    }

    async fn read_sequences(&self, sequences: &[TableName]) -> Result<Vec<Sequence>> {
        catalog::read_sequence_values(&connect(&self.config).await?, sequences).await
    }

    async fn current_position(&self) -> Result<Position> {
        let client = self.polling.get().await?;
        let row = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|error| classify(error, "reading the current WAL position"))?;
        let text: String = row.get(0);
        Lsn::parse(&text).map(Position::Postgres).ok_or_else(|| {
            Error::definite(
                "source.position",
                format!("unreadable WAL position {text:?}"),
            )
        })
    }

    async fn stream_retention(
        &self,
        migration: &str,
    ) -> Result<Option<ferry_core::state::StreamRetention>> {
        super::preflight::slot_status(&self.config, migration).await
    }
}
