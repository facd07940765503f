//! ferry's state on a MySQL target, in the `_ferry` database: the stream checkpoint, each
//! table's state and chunk plan, and recorded failures. Chunk marks and checkpoints are written
//! inside the transactions that write the data they describe.

use std::collections::BTreeMap;

use ferry_core::cutover::CutoverRecord;
use ferry_core::state::{
    Chunk, KeyRange, MigrationState, StreamCheckpoint, TableProgress, TableState,
};
use ferry_core::{Error, Position, Result, TableName};
use mysql_async::prelude::Queryable;

use super::errors::classify;

pub(crate) const CREATE_STATE: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS `_ferry` CHARACTER SET utf8mb4",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`streams` (migration VARCHAR(190) NOT NULL PRIMARY KEY, position VARCHAR(100) NOT NULL, commit_time BIGINT NULL, updated BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`tables` (migration VARCHAR(190) NOT NULL, schema_name VARCHAR(190) NOT NULL, table_name VARCHAR(190) NOT NULL, state VARCHAR(20) NOT NULL, note TEXT NULL, PRIMARY KEY (migration, schema_name, table_name)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`chunks` (migration VARCHAR(190) NOT NULL, schema_name VARCHAR(190) NOT NULL, table_name VARCHAR(190) NOT NULL, chunk_index INT NOT NULL, key_range LONGTEXT NOT NULL, done TINYINT NOT NULL DEFAULT 0, row_count BIGINT NOT NULL DEFAULT 0, snapshot_position VARCHAR(100) NULL, PRIMARY KEY (migration, schema_name, table_name, chunk_index)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`copy_end` (migration VARCHAR(190) NOT NULL PRIMARY KEY, position VARCHAR(100) NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`cutover` (migration VARCHAR(190) NOT NULL PRIMARY KEY, record TEXT NOT NULL, updated BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`fence` (id TINYINT NOT NULL PRIMARY KEY, migration VARCHAR(190) NOT NULL, started DOUBLE NOT NULL, previous_read_only TINYINT NOT NULL, touched BIGINT NOT NULL DEFAULT 0, fencing_session BIGINT UNSIGNED NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`failures` (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, migration VARCHAR(190) NOT NULL, at_micros BIGINT NOT NULL, code VARCHAR(100) NOT NULL, message TEXT NOT NULL) ENGINE=InnoDB",
];

/// Adds the columns later versions of ferry store (MySQL has no `ADD COLUMN IF NOT EXISTS`).
pub(crate) async fn add_new_columns<Q: Queryable>(conn: &mut Q) -> Result<()> {
    let what = "updating ferry's state tables";
    let present: Option<u8> = conn
        .query_first("SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '_ferry' AND TABLE_NAME = 'chunks' AND COLUMN_NAME = 'snapshot_position'")
        .await
        .map_err(|error| classify(error, what))?;
    if present.is_none() {
        match conn
            .query_drop(
                "ALTER TABLE `_ferry`.`chunks` ADD COLUMN snapshot_position VARCHAR(100) NULL",
            )
            .await
        {
            // Added meanwhile by another session.
            Err(mysql_async::Error::Server(error)) if error.code == 1060 => {}
            other => other.map_err(|error| classify(error, what))?,
        }
    }
    Ok(())
}

/// (schema, table, chunk index, key range, done, rows, snapshot position)
type ChunkRow = (String, String, u32, String, i64, i64, Option<String>);

const NOW_MICROS: &str = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)";

fn bad_state(what: &str) -> Error {
    Error::operator(
        "state.corrupt",
        format!("ferry's state on the target is unreadable: {what}"),
    )
    .with_hint("start over with `ferry run --restart`, or drop the `_ferry` database on the target")
}

/// Whether the state tables exist.
pub(crate) async fn exists<Q: Queryable>(conn: &mut Q) -> Result<bool> {
    table_exists(conn, "streams").await
}

/// Whether ferry's state table `_ferry`.`table` exists (reading must not create it: `status`
/// and `check` only read).
pub(crate) async fn table_exists<Q: Queryable>(conn: &mut Q, table: &str) -> Result<bool> {
    let found: Option<u8> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = '_ferry' AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .map_err(|error| classify(error, "reading ferry's state"))?;
    Ok(found.is_some())
}

pub(crate) async fn load<Q: Queryable>(conn: &mut Q, migration: &str) -> Result<MigrationState> {
    let mut state = MigrationState::default();
    if !exists(conn).await? {
        return Ok(state);
    }
    let what = "reading ferry's state";
    let stream: Option<(String, Option<i64>, i64)> = conn
        .exec_first(
            "SELECT position, commit_time, updated FROM `_ferry`.`streams` WHERE migration = ?",
            (migration,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    if let Some((position, commit_time, updated)) = stream {
        state.stream = Some(StreamCheckpoint {
            position: Position::from_storage(&position)
                .ok_or_else(|| bad_state("a stream position"))?,
            commit_time_unix_micros: commit_time,
            updated_unix_micros: updated,
        });
    }
    let copy_end: Option<String> = conn
        .exec_first(
            "SELECT position FROM `_ferry`.`copy_end` WHERE migration = ?",
            (migration,),
        )
        .await
        .unwrap_or(None);
    state.copy_end = copy_end.as_deref().and_then(Position::from_storage);
    let tables: Vec<(String, String, String, Option<String>)> = conn
        .exec("SELECT schema_name, table_name, state, note FROM `_ferry`.`tables` WHERE migration = ?", (migration,))
        .await
        .map_err(|error| classify(error, what))?;
    let mut progress: BTreeMap<TableName, TableProgress> = BTreeMap::new();
    for (schema, table, table_state, note) in tables {
        progress.insert(
            TableName::new(schema, table),
            TableProgress {
                state: TableState::parse(&table_state).ok_or_else(|| bad_state("a table state"))?,
                chunks: Vec::new(),
                note,
            },
        );
    }
    // State written by an earlier version has no snapshot_position column (reading must not
    // change it: `status` and `check` only read).
    let has_positions: Option<u8> = conn
        .query_first("SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '_ferry' AND TABLE_NAME = 'chunks' AND COLUMN_NAME = 'snapshot_position'")
        .await
        .map_err(|error| classify(error, what))?;
    let position = if has_positions.is_some() {
        "snapshot_position"
    } else {
        "NULL"
    };
    let chunks: Vec<ChunkRow> = conn
        .exec(
            format!("SELECT schema_name, table_name, chunk_index, key_range, done, row_count, {position} FROM `_ferry`.`chunks` WHERE migration = ? ORDER BY schema_name, table_name, chunk_index"),
            (migration,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    for (schema, table, index, range, done, rows, snapshot_position) in chunks {
        let range: KeyRange =
            serde_json::from_str(&range).map_err(|_| bad_state("a chunk range"))?;
        if let Some(table) = progress.get_mut(&TableName::new(schema, table)) {
            table.chunks.push(Chunk {
                index,
                range,
                done: done != 0,
                rows: rows as u64,
                snapshot_position: snapshot_position.and_then(|text| Position::from_storage(&text)),
            });
        }
    }
    state.tables = progress;
    Ok(state)
}

pub(crate) async fn set_table_state<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
    table: &TableName,
    state: TableState,
    note: Option<&str>,
) -> Result<()> {
    conn.exec_drop(
        "INSERT INTO `_ferry`.`tables` (migration, schema_name, table_name, state, note) VALUES (?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE state = VALUES(state), note = VALUES(note)",
        (migration, &table.schema, &table.name, state.as_str(), note),
    )
    .await
    .map_err(|error| classify(error, "storing a table's state"))
}

pub(crate) async fn save_plan<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
    table: &TableName,
    chunks: &[Chunk],
) -> Result<()> {
    let what = "storing a chunk plan";
    conn.exec_drop(
        "DELETE FROM `_ferry`.`chunks` WHERE migration = ? AND schema_name = ? AND table_name = ?",
        (migration, &table.schema, &table.name),
    )
    .await
    .map_err(|error| classify(error, what))?;
    for chunk in chunks {
        let range = serde_json::to_string(&chunk.range).map_err(|error| {
            Error::definite(
                "state.encode",
                format!("a chunk range could not be stored: {error}"),
            )
        })?;
        conn.exec_drop(
            "INSERT INTO `_ferry`.`chunks` (migration, schema_name, table_name, chunk_index, key_range, done, row_count) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (migration, &table.schema, &table.name, chunk.index, range, chunk.done as u8, chunk.rows),
        )
        .await
        .map_err(|error| classify(error, what))?;
    }
    set_table_state(conn, migration, table, TableState::Copying, None).await
}

pub(crate) async fn mark_chunk_done(
    conn: &mut mysql_async::Transaction<'_>,
    migration: &str,
    table: &TableName,
    chunk: u32,
    rows: u64,
    snapshot_position: Option<Position>,
) -> Result<()> {
    // `done = 0`: a chunk loaded by a transaction that committed after its process gave up on
    // it is never loaded twice (this one rolls back).
    conn.exec_drop(
        "UPDATE `_ferry`.`chunks` SET done = 1, row_count = ?, snapshot_position = ? WHERE migration = ? AND schema_name = ? AND table_name = ? AND chunk_index = ? AND done = 0",
        (
            rows,
            snapshot_position.map(|position| position.to_storage()),
            migration,
            &table.schema,
            &table.name,
            chunk,
        ),
    )
    .await
    .map_err(|error| classify(error, "marking a chunk done"))?;
    if conn.affected_rows() != 1 {
        return Err(ferry_core::Error::transient(
            "state.chunk",
            format!(
                "chunk {chunk} of {table} is not in the plan, or another transaction loaded it"
            ),
        )
        .with_hint("ferry retries from the stored chunk states"));
    }
    Ok(())
}

pub(crate) async fn store_checkpoint<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
    position: Position,
    commit_time: Option<i64>,
) -> Result<()> {
    conn.exec_drop(
        format!(
            "INSERT INTO `_ferry`.`streams` (migration, position, commit_time, updated) VALUES (?, ?, ?, {NOW_MICROS})
             ON DUPLICATE KEY UPDATE position = VALUES(position), commit_time = COALESCE(VALUES(commit_time), commit_time), updated = VALUES(updated)"
        ),
        (migration, position.to_storage(), commit_time),
    )
    .await
    .map_err(|error| classify(error, "storing the stream checkpoint"))
}

pub(crate) async fn reset_tables<Q: Queryable>(conn: &mut Q, migration: &str) -> Result<()> {
    let what = "resetting ferry's state";
    conn.exec_drop(
        "DELETE FROM `_ferry`.`chunks` WHERE migration = ?",
        (migration,),
    )
    .await
    .map_err(|error| classify(error, what))?;
    conn.exec_drop(
        "UPDATE `_ferry`.`tables` SET state = 'pending', note = NULL WHERE migration = ?",
        (migration,),
    )
    .await
    .map_err(|error| classify(error, what))
}

pub(crate) async fn forget_stream<Q: Queryable>(conn: &mut Q, migration: &str) -> Result<()> {
    conn.exec_drop(
        "DELETE FROM `_ferry`.`streams` WHERE migration = ?",
        (migration,),
    )
    .await
    .map_err(|error| classify(error, "resetting ferry's state"))
}

pub(crate) async fn forget_table<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
    table: &TableName,
) -> Result<()> {
    let what = "forgetting a table";
    for sql in [
        "DELETE FROM `_ferry`.`chunks` WHERE migration = ? AND schema_name = ? AND table_name = ?",
        "DELETE FROM `_ferry`.`tables` WHERE migration = ? AND schema_name = ? AND table_name = ?",
    ] {
        conn.exec_drop(sql, (migration, &table.schema, &table.name))
            .await
            .map_err(|error| classify(error, what))?;
    }
    Ok(())
}

pub(crate) async fn record_failure<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
    at: i64,
    code: &str,
    message: &str,
) -> Result<()> {
    conn.exec_drop(
        "INSERT INTO `_ferry`.`failures` (migration, at_micros, code, message) VALUES (?, ?, ?, ?)",
        (migration, at, code, message),
    )
    .await
    .map_err(|error| classify(error, "recording a failure"))
}

/// How many failures `migration` recorded, and the latest five.
pub(crate) async fn recorded_failures<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
) -> Result<ferry_core::state::FailureSummary> {
    let what = "reading recorded failures";
    let count: Option<i64> = conn
        .exec_first(
            "SELECT count(*) FROM `_ferry`.`failures` WHERE migration = ?",
            (migration,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    let latest: Vec<(i64, String, String)> = conn
        .exec(
            "SELECT at_micros, code, message FROM `_ferry`.`failures` WHERE migration = ? ORDER BY at_micros DESC, id DESC LIMIT 5",
            (migration,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    Ok(ferry_core::state::FailureSummary {
        count: count.unwrap_or(0),
        latest: latest
            .into_iter()
            .map(|(at, code, message)| (ferry_core::calendar::utc_second_text(at), code, message))
            .collect(),
    })
}

pub(crate) async fn save_copy_end<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
    position: Position,
) -> Result<()> {
    conn.exec_drop(
        "INSERT INTO `_ferry`.`copy_end` (migration, position) VALUES (?, ?) ON DUPLICATE KEY UPDATE position = VALUES(position)",
        (migration, position.to_storage()),
    )
    .await
    .map_err(|error| classify(error, "storing where the copy ended"))
}

/// The stored checkpoint of `migration`, if any (without reading the rest of the state).
pub(crate) async fn load_checkpoint<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
) -> Result<Option<StreamCheckpoint>> {
    if !exists(conn).await? {
        return Ok(None);
    }
    let stream: Option<(String, Option<i64>, i64)> = conn
        .exec_first(
            "SELECT position, commit_time, updated FROM `_ferry`.`streams` WHERE migration = ?",
            (migration,),
        )
        .await
        .map_err(|error| classify(error, "reading the stream checkpoint"))?;
    stream
        .map(|(position, commit_time, updated)| {
            Ok(StreamCheckpoint {
                position: Position::from_storage(&position)
                    .ok_or_else(|| bad_state("a stream position"))?,
                commit_time_unix_micros: commit_time,
                updated_unix_micros: updated,
            })
        })
        .transpose()
}

/// The switch-over record of `migration` (the default one when none is stored).
pub(crate) async fn load_cutover<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
) -> Result<CutoverRecord> {
    let what = "reading the switch-over record";
    if !table_exists(conn, "cutover").await? {
        return Ok(CutoverRecord::default());
    }
    let record: Option<String> = conn
        .exec_first(
            "SELECT record FROM `_ferry`.`cutover` WHERE migration = ?",
            (migration,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    match record {
        None => Ok(CutoverRecord::default()),
        Some(text) => serde_json::from_str(&text).map_err(|error| {
            Error::definite(
                "state.cutover",
                format!("unreadable switch-over record in `_ferry`.`cutover`: {error}"),
            )
        }),
    }
}

/// Stores the switch-over record of `migration` durably.
pub(crate) async fn save_cutover<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
    record: &CutoverRecord,
) -> Result<()> {
    let text = serde_json::to_string(record).expect("records serialize");
    conn.exec_drop(
        format!(
            "INSERT INTO `_ferry`.`cutover` (migration, record, updated) VALUES (?, ?, {NOW_MICROS})
             ON DUPLICATE KEY UPDATE record = VALUES(record), updated = VALUES(updated)"
        ),
        (migration, text),
    )
    .await
    .map_err(|error| classify(error, "storing the switch-over record"))
}
