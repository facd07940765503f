//! Where a MySQL or MariaDB server's binary log stands: its end now, the position a consistent
//! snapshot is exact at, the server id and the MariaDB GTID that go with a position.

use ferry_core::{BinlogPosition, Error, Gtid, Position, Result};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::connection::is_mariadb;
use super::errors::classify;

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
pub(crate) async fn gtid_at(conn: &mut Conn, file: &str, offset: u64) -> Result<Option<Gtid>> {
    let list: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, offset))
        .await
        .map_err(|error| classify(error, "reading the GTID of the start position"))?;
    Ok(list.flatten().as_deref().and_then(single_gtid))
}

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
