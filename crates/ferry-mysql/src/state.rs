//! ferry's state on a MySQL target, in the `_ferry` database: the stream checkpoint, each
//! table's state and chunk plan, and recorded failures. Chunk marks and checkpoints are written
//! inside the transactions that write the data they describe.

use ferry_core::cutover::CutoverRecord;
use ferry_core::state::stored::{
    decode_cutover, encode_cutover, encode_range, failure_summary, StoreNames, StoredCheckpoint,
    StoredChunk, StoredState, StoredTable,
};
use ferry_core::state::{Chunk, MigrationState, StreamCheckpoint, TableState};
use ferry_core::{Position, Result, TableName};
use mysql_async::prelude::Queryable;

use super::errors::classify;

pub(crate) const CREATE_STATE: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS `_ferry` CHARACTER SET utf8mb4",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`streams` (migration VARCHAR(190) NOT NULL PRIMARY KEY, position TEXT NOT NULL, commit_time BIGINT NULL, updated BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`tables` (migration VARCHAR(190) NOT NULL, schema_name VARCHAR(190) NOT NULL, table_name VARCHAR(190) NOT NULL, state VARCHAR(20) NOT NULL, note TEXT NULL, PRIMARY KEY (migration, schema_name, table_name)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`chunks` (migration VARCHAR(190) NOT NULL, schema_name VARCHAR(190) NOT NULL, table_name VARCHAR(190) NOT NULL, chunk_index INT NOT NULL, key_range LONGTEXT NOT NULL, done TINYINT NOT NULL DEFAULT 0, row_count BIGINT NOT NULL DEFAULT 0, snapshot_position TEXT NULL, PRIMARY KEY (migration, schema_name, table_name, chunk_index)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`copy_end` (migration VARCHAR(190) NOT NULL PRIMARY KEY, position TEXT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`cutover` (migration VARCHAR(190) NOT NULL PRIMARY KEY, record TEXT NOT NULL, updated BIGINT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`fence` (id TINYINT NOT NULL PRIMARY KEY, migration VARCHAR(190) NOT NULL, started DOUBLE NOT NULL, previous_read_only TINYINT NOT NULL, touched BIGINT NOT NULL DEFAULT 0, fencing_session BIGINT UNSIGNED NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `_ferry`.`failures` (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, migration VARCHAR(190) NOT NULL, at_micros BIGINT NOT NULL, code VARCHAR(100) NOT NULL, message TEXT NOT NULL) ENGINE=InnoDB",
];

/// Adds the columns later versions of ferry store (MySQL has no `ADD COLUMN IF NOT EXISTS`)
/// and widens the position columns of earlier versions.
pub(crate) async fn add_new_columns<Q: Queryable>(conn: &mut Q) -> Result<()> {
    let what = "updating ferry's state tables";
    let present: Option<u8> = conn
        .query_first("SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '_ferry' AND TABLE_NAME = 'chunks' AND COLUMN_NAME = 'snapshot_position'")
        .await
        .map_err(|error| classify(error, what))?;
    if present.is_none() {
        match conn
            .query_drop("ALTER TABLE `_ferry`.`chunks` ADD COLUMN snapshot_position TEXT NULL")
            .await
        {
            // Added meanwhile by another session.
            Err(mysql_async::Error::Server(error)) if error.code == 1060 => {}
            other => other.map_err(|error| classify(error, what))?,
        }
    }
    // Positions were VARCHAR(100) up to version 0.1: too short for a connector's own positions
    // (offset maps, resume tokens). Widened once; MODIFY to the same type is harmless when two
    // processes do it at once.
    let narrow: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '_ferry' AND DATA_TYPE = 'varchar' \
             AND ((TABLE_NAME IN ('streams', 'copy_end') AND COLUMN_NAME = 'position') OR (TABLE_NAME = 'chunks' AND COLUMN_NAME = 'snapshot_position'))",
        )
        .await
        .map_err(|error| classify(error, what))?;
    for (table, column) in narrow {
        let null = if column == "position" {
            "NOT NULL"
        } else {
            "NULL"
        };
        conn.query_drop(format!(
            "ALTER TABLE `_ferry`.`{table}` MODIFY `{column}` TEXT {null}"
        ))
        .await
        .map_err(|error| classify(error, what))?;
    }
    Ok(())
}

/// Where each part of the state is, for errors.
const STORE: StoreNames = StoreNames {
    stream: "`_ferry`.`streams`",
    copy_end: "`_ferry`.`copy_end`",
    tables: "`_ferry`.`tables`",
    chunks: "`_ferry`.`chunks`",
};

/// (schema, table, chunk index, key range, done, rows, snapshot position)
type ChunkRow = (String, String, u32, String, i64, i64, Option<String>);

const NOW_MICROS: &str = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)";

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

/// The stored checkpoint row of `migration`, if any.
async fn stored_checkpoint<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
    what: &str,
) -> Result<Option<StoredCheckpoint>> {
    let stream: Option<(String, Option<i64>, i64)> = conn
        .exec_first(
            "SELECT position, commit_time, updated FROM `_ferry`.`streams` WHERE migration = ?",
            (migration,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    Ok(stream.map(
        |(position, commit_time_unix_micros, updated_unix_micros)| StoredCheckpoint {
            position,
            commit_time_unix_micros,
            updated_unix_micros,
        },
    ))
}

pub(crate) async fn load<Q: Queryable>(conn: &mut Q, migration: &str) -> Result<MigrationState> {
    if !exists(conn).await? {
        return Ok(MigrationState::default());
    }
    let what = "reading ferry's state";
    let mut stored = StoredState {
        stream: stored_checkpoint(conn, migration, what).await?,
        ..StoredState::default()
    };
    if table_exists(conn, "copy_end").await? {
        stored.copy_end = conn
            .exec_first(
                "SELECT position FROM `_ferry`.`copy_end` WHERE migration = ?",
                (migration,),
            )
            .await
            .map_err(|error| classify(error, what))?;
    }
    let tables: Vec<(String, String, String, Option<String>)> = conn
        .exec("SELECT schema_name, table_name, state, note FROM `_ferry`.`tables` WHERE migration = ?", (migration,))
        .await
        .map_err(|error| classify(error, what))?;
    stored.tables = tables
        .into_iter()
        .map(|(schema, table, state, note)| StoredTable {
            name: TableName::new(schema, table),
            state,
            note,
        })
        .collect();
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
            format!("SELECT schema_name, table_name, chunk_index, key_range, done, row_count, {position} FROM `_ferry`.`chunks` WHERE migration = ?"),
            (migration,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    stored.chunks = chunks
        .into_iter()
        .map(
            |(schema, table, index, range, done, rows, snapshot_position)| StoredChunk {
                table: TableName::new(schema, table),
                index: index.into(),
                range,
                done: done != 0,
                rows,
                snapshot_position,
            },
        )
        .collect();
    stored.decode(&STORE)
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
        let range = encode_range(&chunk.range)?;
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

/// Every table to be copied again: chunk plans, and where the last copy ended, forgotten.
pub(crate) async fn reset_tables<Q: Queryable>(conn: &mut Q, migration: &str) -> Result<()> {
    let what = "resetting ferry's state";
    for sql in [
        "DELETE FROM `_ferry`.`chunks` WHERE migration = ?",
        "DELETE FROM `_ferry`.`copy_end` WHERE migration = ?",
    ] {
        conn.exec_drop(sql, (migration,))
            .await
            .map_err(|error| classify(error, what))?;
    }
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
    Ok(failure_summary(count.unwrap_or(0), latest))
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
    stored_checkpoint(conn, migration, "reading the stream checkpoint")
        .await?
        .map(|checkpoint| checkpoint.decode(STORE.stream))
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
    decode_cutover(record, "`_ferry`.`cutover`")
}

/// Stores the switch-over record of `migration` durably.
pub(crate) async fn save_cutover<Q: Queryable>(
    conn: &mut Q,
    migration: &str,
    record: &CutoverRecord,
) -> Result<()> {
    let text = encode_cutover(record)?;
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
