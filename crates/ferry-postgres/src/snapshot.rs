//! Consistent reads of the source for the copy.
//!
//! A snapshot is named by a PostgreSQL snapshot id. It comes either from the replication slot
//! (`CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT`: exactly the data before the slot's consistent
//! point) or from `pg_export_snapshot()` in a repeatable-read transaction (a fresh view for
//! resumed or added tables). The exporting session must stay open and idle until every reader has
//! imported the snapshot, so [`PostgresSnapshot`] owns it and is dropped only after the copy.
//! Readers import it with `SET TRANSACTION SNAPSHOT` and keep their transaction open.

use async_trait::async_trait;
use ferry_core::connector::{ByteStream, ChunkFormat, ChunkReader, Snapshot};
use ferry_core::state::KeyRange;
use ferry_core::{Error, Position, Result, TableSchema, Value};
use futures_util::StreamExt;
use tokio_postgres::Client;

use super::config::ConnectionConfig;
use super::connection::connect;
use super::ddl::{
    copy_options, ident, own_rows_of, qualified, range_predicate, COPY_BINARY, COPY_TEXT,
};
use super::errors::classify;

/// What keeps the exported snapshot alive.
pub(crate) enum SnapshotHolder {
    /// The replication session that created the slot (held open, never read).
    Slot(#[allow(dead_code)] pgwire_replication::ReplicationClient),
    /// A repeatable-read transaction that called `pg_export_snapshot()` (held open, never read).
    Transaction(#[allow(dead_code)] Client),
}

/// A snapshot of the source that readers import.
pub(super) struct PostgresSnapshot {
    config: ConnectionConfig,
    snapshot_id: String,
    /// Where the snapshot stands in the change stream, when it was exported by a slot.
    position: Option<Position>,
    _holder: SnapshotHolder,
}

impl PostgresSnapshot {
    pub(crate) fn new(
        config: ConnectionConfig,
        snapshot_id: String,
        holder: SnapshotHolder,
        position: Option<Position>,
    ) -> Self {
        PostgresSnapshot {
            config,
            snapshot_id,
            position,
            _holder: holder,
        }
    }

    /// Exports a snapshot of the data as it is now; with `exact`, through a temporary slot, so
    /// that its place in the change stream is known.
    pub(crate) async fn fresh(config: &ConnectionConfig, exact: bool) -> Result<PostgresSnapshot> {
        if exact {
            let (position, snapshot_id, session) =
                super::cdc::create_temporary_slot(config).await?;
            return Ok(PostgresSnapshot::new(
                config.clone(),
                snapshot_id,
                SnapshotHolder::Slot(session),
                Some(Position::Postgres(position)),
            ));
        }
        let client = connect(config).await?;
        let what = "exporting a snapshot of the source";
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|error| classify(error, what))?;
        let row = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(|error| classify(error, what))?;
        Ok(PostgresSnapshot::new(
            config.clone(),
            row.get(0),
            SnapshotHolder::Transaction(client),
            None,
        ))
    }

    async fn open(&self) -> Result<Client> {
        let client = connect(&self.config).await?;
        let what = format!(
            "importing snapshot {} on {}",
            self.snapshot_id,
            self.config.describe()
        );
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
                self.snapshot_id.replace('\'', "")
            ))
            .await
            .map_err(|error| classify(error, &what))?;
        Ok(client)
    }
}

/// True for key types whose chunk bounds can be computed by arithmetic.
fn is_integer(native_type: &str) -> bool {
    matches!(native_type, "smallint" | "integer" | "bigint")
}

#[async_trait]
impl Snapshot for PostgresSnapshot {
    async fn plan_chunks(&self, table: &TableSchema, rows_per_chunk: u64) -> Result<Vec<KeyRange>> {
        if table.primary_key.is_empty() {
            // Without a key, the table is one chunk (read whole under the snapshot).
            return Ok(vec![KeyRange {
                lower: None,
                upper: None,
            }]);
        }
        let rows_per_chunk = rows_per_chunk.max(1);
        let client = self.open().await?;
        let what = format!("planning chunks of {}", table.name);
        let mut estimated = table.estimated_rows;
        if estimated == 0 {
            // Never analyzed: count, so that a large table still splits.
            let row = client
                .query_one(&format!("SELECT count(*) FROM {}", own_rows_of(table)), &[])
                .await
                .map_err(|error| classify(error, &what))?;
            estimated = row.get::<_, i64>(0).max(0) as u64;
        }
        let chunks = estimated.div_ceil(rows_per_chunk);
        if chunks <= 1 {
            return Ok(vec![KeyRange {
                lower: None,
                upper: None,
            }]);
        }
        let key_type = table
            .primary_key
            .first()
            .and_then(|name| table.column(name))
            .map(|column| column.native_type.as_str())
            .unwrap_or("");
        let lower_bounds: Vec<Vec<Value>> = if table.primary_key.len() == 1 && is_integer(key_type)
        {
            let key = ident(&table.primary_key[0]);
            let row = client
                .query_one(
                    &format!(
                        "SELECT min({key})::bigint, max({key})::bigint FROM {}",
                        own_rows_of(table)
                    ),
                    &[],
                )
                .await
                .map_err(|error| classify(error, &what))?;
            let (Some(min), Some(max)) =
                (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1))
            else {
                return Ok(vec![KeyRange {
                    lower: None,
                    upper: None,
                }]);
            };
            let span = (max as i128 - min as i128 + 1) as u128;
            let step = span.div_ceil(chunks as u128).max(1);
            (1..chunks as u128)
                .map(|index| min as i128 + (index * step) as i128)
                .take_while(|bound| *bound <= max as i128)
                .map(|bound| vec![Value::Int64(bound as i64)])
                .collect()
        } else {
            // Every n-th key in key order, found by the server in one pass over the key index.
            let keys: Vec<String> = table
                .primary_key
                .iter()
                .map(|column| ident(column))
                .collect();
            let texts: Vec<String> = keys.iter().map(|key| format!("{key}::text")).collect();
            let rows = client
                .query(
                    &format!(
                        "SELECT {} FROM (SELECT {}, row_number() OVER (ORDER BY {}) AS ferry_row FROM {}) numbered
                         WHERE ferry_row % {rows_per_chunk} = 1 AND ferry_row > 1 ORDER BY ferry_row",
                        texts.join(", "),
                        keys.join(", "),
                        keys.join(", "),
                        own_rows_of(table)
                    ),
                    &[],
                )
                .await
                .map_err(|error| classify(error, &what))?;
            rows.iter()
                .map(|row| {
                    table
                        .primary_key
                        .iter()
                        .enumerate()
                        .map(|(index, name)| Value::Native {
                            type_name: table
                                .column(name)
                                .map(|column| column.native_type.clone())
                                .unwrap_or_default(),
                            text: row.get(index),
                        })
                        .collect()
                })
                .collect()
        };
        Ok(KeyRange::covering(lower_bounds))
    }

    async fn open_reader(&self) -> Result<Box<dyn ChunkReader>> {
        Ok(Box::new(PostgresChunkReader {
            client: self.open().await?,
            position: self.position.clone(),
        }))
    }
}

/// Reads chunks with `COPY (SELECT ...) TO STDOUT` inside the imported snapshot.
pub(super) struct PostgresChunkReader {
    client: Client,
    position: Option<Position>,
}

/// Binary COPY carries type OIDs inside arrays and composite values, which differ between
/// servers for user-defined types: such tables travel in text format.
fn binary_safe(table: &TableSchema) -> bool {
    table
        .writable_columns()
        .all(|column| !column.user_defined_type)
}

#[async_trait]
impl ChunkReader for PostgresChunkReader {
    fn snapshot_position(&self) -> Option<Position> {
        self.position.clone()
    }

    async fn read(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        accepted: &[ChunkFormat],
    ) -> Result<(ChunkFormat, ByteStream)> {
        let format = accepted
            .iter()
            .copied()
            .find(|format| match *format {
                COPY_BINARY => binary_safe(table),
                COPY_TEXT | ChunkFormat::Rows => true,
                ChunkFormat::Native(_) => false,
            })
            .ok_or_else(|| {
                Error::operator(
                    "copy.format",
                    format!(
                        "the target accepts no format PostgreSQL can produce for {}",
                        table.name
                    ),
                )
            })?;
        let columns: Vec<String> = table
            .writable_columns()
            .map(|column| ident(&column.name))
            .collect();
        let options = copy_options(format);
        let predicate = range_predicate(table, range)?;
        // `COPY table TO` reads the table's own rows only, and refuses a partitioned table.
        let sql = if predicate == "TRUE" && table.partitioning.is_none() {
            format!(
                "COPY {} ({}) TO STDOUT {options}",
                qualified(&table.name),
                columns.join(", ")
            )
        } else {
            format!(
                "COPY (SELECT {} FROM {} WHERE {predicate}) TO STDOUT {options}",
                columns.join(", "),
                own_rows_of(table)
            )
        };
        let what = format!("reading {}", table.name);
        let stream = self
            .client
            .copy_out(&sql)
            .await
            .map_err(|error| classify(error, &what))?;
        let stream: ByteStream =
            Box::pin(stream.map(move |item| item.map_err(|error| classify(error, &what))));
        if format == ChunkFormat::Rows {
            return Ok((format, super::rows::copy_text_to_rows(table, stream)));
        }
        Ok((format, stream))
    }
}
