//! Copying from MySQL: chunk plans by primary key, and chunk reads.
//!
//! MySQL cannot share one snapshot between connections, and ferry does not need it to: every
//! chunk is read in its own consistent-snapshot transaction taken after the stream's start
//! position (see `source.rs`), and the stream replays everything from that position over the
//! copied rows (the argument in the engine's `migration.rs`). No table is locked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::connector::{ByteStream, ChunkFormat, ChunkReader, Snapshot};
use ferry_core::rows::encode_row;
use ferry_core::state::KeyRange;
use ferry_core::{Error, Position, Result, TableSchema, Value};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params};
use tokio::sync::Mutex;

use super::catalog::kind_of;
use super::config::MysqlConfig;
use super::connection::connect;
use super::ddl::{ident, range_predicate};
use super::errors::classify;
use super::types::Kind;
use super::values::{decode, param};

/// Reads a MySQL database with a fresh consistent snapshot per chunk.
pub(super) struct MysqlSnapshot {
    pub(crate) config: MysqlConfig,
}

/// Whether `ORDER BY` on this key agrees with `<`/`>=` comparisons on it (ENUM sorts by its
/// index but compares as text; floats and bits are poor chunk bounds): else the table is one chunk.
fn splittable(table: &TableSchema) -> bool {
    table.primary_key.iter().all(|name| {
        table.column(name).is_some_and(|column| {
            matches!(
                kind_of(column),
                Kind::Integer { .. }
                    | Kind::Decimal
                    | Kind::Text { .. }
                    | Kind::Binary { .. }
                    | Kind::Spatial
                    | Kind::Date
                    | Kind::DateTime
                    | Kind::Timestamp
                    | Kind::Year
            )
        })
    })
}

pub(crate) fn params(values: &[Value]) -> Params {
    if values.is_empty() {
        Params::Empty
    } else {
        Params::Positional(values.iter().map(param).collect())
    }
}

/// Decodes a result row of `table`'s columns `names`.
pub(crate) fn decode_row(
    table: &TableSchema,
    kinds: &[Kind],
    row: mysql_async::Row,
) -> Result<Vec<Value>> {
    row.unwrap()
        .into_iter()
        .zip(kinds)
        .map(|(raw, kind)| {
            decode(kind, raw, false)
                .map_err(|error| error.context(format!("reading {}", table.name)))
        })
        .collect()
}

#[async_trait]
impl Snapshot for MysqlSnapshot {
    async fn plan_chunks(&self, table: &TableSchema, rows_per_chunk: u64) -> Result<Vec<KeyRange>> {
        if table.primary_key.is_empty()
            || !splittable(table)
            || table.estimated_rows <= rows_per_chunk
        {
            return Ok(vec![KeyRange {
                lower: None,
                upper: None,
            }]);
        }
        let mut conn = connect(&self.config, true).await?;
        let kinds: Vec<Kind> = table
            .primary_key
            .iter()
            .filter_map(|name| table.column(name).map(kind_of))
            .collect();
        let columns: Vec<String> = table.primary_key.iter().map(|name| ident(name)).collect();
        let mut bounds: Vec<Vec<Value>> = Vec::new();
        let what = format!("planning chunks of {}", table.name);
        loop {
            let (predicate, values) = match bounds.last() {
                Some(last) => range_predicate(
                    table,
                    &KeyRange {
                        lower: Some(last.clone()),
                        upper: None,
                    },
                ),
                None => ("TRUE".to_string(), Vec::new()),
            };
            let sql = format!(
                "SELECT {} FROM {} WHERE {predicate} ORDER BY {} LIMIT 1 OFFSET {}",
                columns.join(", "),
                ident(&table.name.name),
                columns.join(", "),
                rows_per_chunk.max(1)
            );
            let row: Option<mysql_async::Row> = conn
                .exec_first(sql, params(&values))
                .await
                .map_err(|error| classify(error, &what))?;
            match row {
                Some(row) => bounds.push(decode_row(table, &kinds, row)?),
                None => break,
            }
        }
        Ok(KeyRange::covering(bounds))
    }

    async fn open_reader(&self) -> Result<Box<dyn ChunkReader>> {
        Ok(Box::new(MysqlChunkReader {
            conn: Arc::new(Mutex::new(connect(&self.config, true).await?)),
            position: None,
        }))
    }
}

/// Reads chunks on one connection; a read streams its rows from a task that holds the
/// connection until the chunk ends.
pub(super) struct MysqlChunkReader {
    conn: Arc<Mutex<Conn>>,
    /// The position the last chunk's snapshot is exact at (read for tables without a key).
    position: Option<Position>,
}

/// Rows are sent in items of about this many bytes.
const ITEM_BYTES: usize = 256 * 1024;

#[async_trait]
impl ChunkReader for MysqlChunkReader {
    fn snapshot_position(&self) -> Option<Position> {
        self.position.clone()
    }

    async fn read(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        accepted: &[ChunkFormat],
    ) -> Result<(ChunkFormat, ByteStream)> {
        if !accepted.contains(&ChunkFormat::Rows) {
            return Err(Error::operator(
                "copy.format",
                format!(
                    "the target accepts no format MySQL can produce for {}",
                    table.name
                ),
            ));
        }
        let table = table.clone();
        let columns: Vec<String> = table
            .writable_columns()
            .map(|column| ident(&column.name))
            .collect();
        let kinds: Vec<Kind> = table.writable_columns().map(kind_of).collect();
        let (predicate, values) = range_predicate(&table, range);
        let sql = format!(
            "SELECT {} FROM {} WHERE {predicate}",
            columns.join(", "),
            ident(&table.name.name),
        );
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
        let mut conn = self.conn.clone().lock_owned().await;
        // The snapshot starts here, so that its position is known when `read` returns.
        let what = format!("reading {}", table.name);
        self.position = None;
        if table.primary_key.is_empty() {
            self.position = Some(
                super::binlog::start_at_known_position(&mut conn, &what)
                    .await?
                    .position,
            );
        } else {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                .await
                .map_err(|error| classify(error, &what))?;
        }
        // Set once every row was sent: a reader that ends any other way (a panic, a dropped
        // task) must not look like the end of the chunk, or a partial chunk is marked done.
        let finished = Arc::new(AtomicBool::new(false));
        let finished_by_reader = finished.clone();
        tokio::spawn(async move {
            let mut conn = conn;
            let what = format!("reading {}", table.name);
            let result: Result<()> = async {
                let mut result = conn
                    .exec_iter(sql, params(&values))
                    .await
                    .map_err(|error| classify(error, &what))?;
                let mut buffer = Vec::with_capacity(ITEM_BYTES + 4096);
                while let Some(row) = result
                    .next()
                    .await
                    .map_err(|error| classify(error, &what))?
                {
                    encode_row(&decode_row(&table, &kinds, row)?, &mut buffer);
                    if buffer.len() >= ITEM_BYTES {
                        let item = Bytes::from(std::mem::replace(
                            &mut buffer,
                            Vec::with_capacity(ITEM_BYTES + 4096),
                        ));
                        if sender.send(Ok(item)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                drop(result);
                conn.query_drop("COMMIT")
                    .await
                    .map_err(|error| classify(error, &what))?;
                if !buffer.is_empty() && sender.send(Ok(Bytes::from(buffer))).await.is_err() {
                    return Ok(());
                }
                finished_by_reader.store(true, Ordering::SeqCst);
                Ok(())
            }
            .await;
            if let Err(error) = result {
                let _ = sender.send(Err(error)).await;
            }
        });
        let stream = futures_util::stream::unfold(Some(receiver), move |receiver| {
            let finished = finished.clone();
            async move {
                let mut receiver = receiver?;
                match receiver.recv().await {
                    Some(item) => Some((item, Some(receiver))),
                    None if finished.load(Ordering::SeqCst) => None,
                    None => Some((
                        Err(Error::transient(
                            "copy.reader_ended",
                            "the chunk reader stopped before the end of the chunk",
                        )),
                        None,
                    )),
                }
            }
        });
        Ok((ChunkFormat::Rows, Box::pin(stream) as ByteStream))
    }
}
