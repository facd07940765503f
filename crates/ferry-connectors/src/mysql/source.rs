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
use ferry_core::{BinlogPosition, Error, Gtid, Position, Result, Value};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::catalog::{auto_increment_sequence, read_catalog_for};
use super::cdc::BinlogChangeStream;
use super::config::MysqlConfig;
use super::connection::{connect, is_mariadb};
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

/// The position `offset` in binary log file `file` of server `server`.
pub(crate) fn position_of(file: &str, offset: u64, server: u32) -> Result<Position> {
    let number = BinlogPosition::file_number(file).ok_or_else(|| {
        Error::operator(
            "source.binlog",
            format!("the binary log file name '{file}' has no number"),
        )
    })?;
    Ok(Position::Mysql(BinlogPosition {
        file: number,
        offset,
        server,
        gtid: None,
    }))
}

/// The connected server's `server_id`.
pub(crate) async fn server_id_of(conn: &mut Conn) -> Result<u32> {
    let id: Option<u32> = conn
        .query_first("SELECT @@server_id")
        .await
        .map_err(|error| classify(error, "reading the source's server_id"))?;
    Ok(id.unwrap_or(0))
}

/// The one GTID in a MariaDB GTID position list (`0-1-42`), or None for an empty list or one
/// with several replication domains (ferry then resumes by file and offset only).
pub(crate) fn single_gtid(list: &str) -> Option<Gtid> {
    let list = list.trim();
    (!list.contains(',')).then(|| Gtid::parse(list)).flatten()
}

/// MariaDB: the GTID position at `offset` of `file` (`BINLOG_GTID_POS`), when it is one GTID.
async fn gtid_at(conn: &mut Conn, file: &str, offset: u64) -> Result<Option<Gtid>> {
    let list: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, offset))
        .await
        .map_err(|error| classify(error, "reading the GTID of the start position"))?;
    Ok(list.flatten().as_deref().and_then(single_gtid))
}

/// The end of the binary log now.
/// Where a consistent snapshot started by [`start_at_known_position`] stands in the binary log.
pub(crate) struct SnapshotStart {
    pub position: Position,
    /// The binary log file's name and the offset in it.
    pub file: String,
    pub offset: u64,
    pub mariadb: bool,
}

/// Starts a consistent-snapshot transaction (left open) and returns the binary log position it
/// is exact at: every transaction that ends at or before it is visible, none after. MariaDB
/// reports the position with the snapshot (`binlog_snapshot_*`, no lock); MySQL needs a moment's
/// `FLUSH TABLES WITH READ LOCK` around the start.
pub(crate) async fn start_at_known_position(conn: &mut Conn, what: &str) -> Result<SnapshotStart> {
    let server = server_id_of(conn).await?;
    if is_mariadb(conn).await? {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(|error| classify(error, what))?;
        let rows: Vec<(String, String)> = conn
            .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
            .await
            .map_err(|error| classify(error, what))?;
        let get = |name: &str| {
            rows.iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        let file = get("binlog_snapshot_file")
            .filter(|file| !file.is_empty())
            .ok_or_else(|| {
                Error::operator("source.binlog_disabled", "the source has no binary log").with_hint(
                    "start the server with log_bin (and binlog_format=ROW, binlog_row_image=FULL)",
                )
            })?;
        let offset = get("binlog_snapshot_position")
            .and_then(|value| value.parse().ok())
            .unwrap_or(4);
        return Ok(SnapshotStart {
            position: position_of(&file, offset, server)?,
            file,
            offset,
            mariadb: true,
        });
    }
    conn.query_drop("FLUSH TABLES WITH READ LOCK").await.map_err(|error| {
        classify(error, what).with_hint("grant RELOAD to ferry's user: MySQL needs a moment's global read lock to take a consistent snapshot at a known binary log position")
    })?;
    let started = conn
        .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(|error| classify(error, what));
    let end = log_end(conn).await;
    let _ = conn.query_drop("UNLOCK TABLES").await;
    started?;
    let (file, offset) = end?;
    Ok(SnapshotStart {
        position: position_of(&file, offset, server)?,
        file,
        offset,
        mariadb: false,
    })
}

pub(crate) async fn log_end(conn: &mut Conn) -> Result<(String, u64)> {
    let row: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(row) => row,
        Err(_) => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(|error| classify(error, "reading the binary log position"))?,
    };
    let row = row.ok_or_else(|| {
        Error::operator("source.binlog_disabled", "the source has no binary log").with_hint(
            "start the server with log_bin (and binlog_format=ROW, binlog_row_image=FULL)",
        )
    })?;
    let file: String = row.get(0).unwrap_or_default();
    let offset: u64 = row.get(1).unwrap_or_default();
    Ok((file, offset))
}

/// The end of the binary log now, with its GTID on MariaDB.
pub(crate) async fn current_position(conn: &mut Conn) -> Result<Position> {
    let (file, offset) = log_end(conn).await?;
    let server = server_id_of(conn).await?;
    // MariaDB: the GTID state read after the file and offset, so never older than them; it lets
    // this position be compared with a checkpoint taken on another server.
    let gtid = if is_mariadb(conn).await? {
        let list: Option<String> = conn
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .map_err(|error| classify(error, "reading the GTID position"))?;
        list.as_deref().and_then(single_gtid)
    } else {
        None
    };
    let mut position = position_of(&file, offset, server)?;
    if let Position::Mysql(binlog) = &mut position {
        binlog.gtid = gtid;
    }
    Ok(position)
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
            return Err(Error::operator(
                "state.position",
                format!("the checkpoint {position} is not a MySQL binary log position"),
            )
            .with_hint("the target holds the state of a migration from another kind of source: use another --name or `ferry run --restart`"));
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
