//! ferry's own tables on the target, in schema `_ferry`: the stream checkpoint of each migration,
//! each table's handoff state and its chunk plan. They are written in the same transactions as
//! the data they describe.

use ferry_core::cutover::CutoverRecord;
use ferry_core::state::stored::{
    decode_cutover, encode_cutover, encode_range, StoreNames, StoredCheckpoint, StoredChunk,
    StoredState, StoredTable,
};
use ferry_core::state::{Chunk, MigrationState, StreamCheckpoint, TableState};
use ferry_core::{Error, Position, Result, TableName};
use tokio_postgres::GenericClient;

use super::errors::classify;

pub(crate) const CREATE_STATE_TABLES: &str = "
CREATE SCHEMA IF NOT EXISTS _ferry;
CREATE TABLE IF NOT EXISTS _ferry.stream (
    migration text PRIMARY KEY,
    position text NOT NULL,
    commit_time_unix_micros bigint,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS _ferry.copy_end (
    migration text PRIMARY KEY,
    position text NOT NULL
);
CREATE TABLE IF NOT EXISTS _ferry.table_state (
    migration text NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    state text NOT NULL,
    PRIMARY KEY (migration, table_schema, table_name)
);
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = '_ferry' AND table_name = 'table_state' AND column_name = 'note') THEN
    ALTER TABLE _ferry.table_state ADD COLUMN note text;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = '_ferry' AND table_name = 'table_state' AND column_name = 'last_change_at') THEN
    ALTER TABLE _ferry.table_state ADD COLUMN last_change_at timestamptz;
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS _ferry.chunk (
    migration text NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    chunk_index integer NOT NULL,
    key_range text NOT NULL,
    done boolean NOT NULL DEFAULT false,
    rows bigint NOT NULL DEFAULT 0,
    snapshot_position text,
    PRIMARY KEY (migration, table_schema, table_name, chunk_index)
);
-- State of an earlier version: add the column only where it is missing (ALTER TABLE would lock
-- the table against every migration sharing this target even when it has the column).
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                 WHERE table_schema = '_ferry' AND table_name = 'chunk' AND column_name = 'snapshot_position') THEN
    ALTER TABLE _ferry.chunk ADD COLUMN snapshot_position text;
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS _ferry.failure (
    migration text NOT NULL,
    at timestamptz NOT NULL,
    code text NOT NULL,
    message text NOT NULL
);
CREATE TABLE IF NOT EXISTS _ferry.verify_range (
    migration text NOT NULL,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    range_index integer NOT NULL,
    key_range text NOT NULL,
    outcome text,
    PRIMARY KEY (migration, table_schema, table_name, range_index)
);
CREATE TABLE IF NOT EXISTS _ferry.cutover (
    migration text PRIMARY KEY,
    record text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);";

/// Where each part of the state is, for errors.
const STORE: StoreNames = StoreNames {
    stream: "_ferry.stream",
    copy_end: "_ferry.copy_end",
    tables: "_ferry.table_state",
    chunks: "_ferry.chunk",
};

/// Whether ferry's state table `_ferry.<table>` exists (it does not before the first run).
pub(crate) async fn state_table_exists(
    client: &impl GenericClient,
    table: &str,
    what: &str,
) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT to_regclass('_ferry.' || quote_ident($1)) IS NOT NULL",
            &[&table],
        )
        .await
        .map_err(|error| classify(error, what))?
        .get(0))
}

/// The stream checkpoint of `migration`, if it has one.
pub(crate) async fn load_checkpoint(
    client: &impl GenericClient,
    migration: &str,
) -> Result<Option<StreamCheckpoint>> {
    let what = "reading the stream checkpoint";
    if !state_table_exists(client, "stream", what).await? {
        return Ok(None);
    }
    stored_checkpoint(client, migration, what)
        .await?
        .map(|checkpoint| checkpoint.decode(STORE.stream))
        .transpose()
}

/// The stored checkpoint row of `migration`, as read.
async fn stored_checkpoint(
    client: &impl GenericClient,
    migration: &str,
    what: &str,
) -> Result<Option<StoredCheckpoint>> {
    Ok(client
        .query_opt(
            "SELECT position, commit_time_unix_micros, (extract(epoch FROM updated_at) * 1000000)::bigint FROM _ferry.stream WHERE migration = $1",
            &[&migration],
        )
        .await
        .map_err(|error| classify(error, what))?
        .map(|row| StoredCheckpoint {
            position: row.get(0),
            commit_time_unix_micros: row.get(1),
            updated_unix_micros: row.get(2),
        }))
}

pub(crate) async fn load(client: &impl GenericClient, migration: &str) -> Result<MigrationState> {
    let what = "reading ferry's state on the target";
    if !state_table_exists(client, "chunk", what).await? {
        return Ok(MigrationState::default());
    }
    let mut stored = StoredState {
        stream: stored_checkpoint(client, migration, what).await?,
        ..StoredState::default()
    };
    if state_table_exists(client, "copy_end", what).await? {
        stored.copy_end = client
            .query_opt(
                "SELECT position FROM _ferry.copy_end WHERE migration = $1",
                &[&migration],
            )
            .await
            .map_err(|error| classify(error, what))?
            .map(|row| row.get(0));
    }
    stored.tables = client
        .query(
            "SELECT table_schema, table_name, state, note FROM _ferry.table_state WHERE migration = $1",
            &[&migration],
        )
        .await
        .map_err(|error| classify(error, what))?
        .iter()
        .map(|row| StoredTable {
            name: TableName::new(row.get::<_, String>(0), row.get::<_, String>(1)),
            state: row.get(2),
            note: row.get(3),
        })
        .collect();
    stored.chunks = client
        // (`to_jsonb`: state written by an earlier version has no snapshot_position column.)
        .query("SELECT table_schema, table_name, chunk_index, key_range, done, rows, to_jsonb(c) ->> 'snapshot_position' FROM _ferry.chunk c WHERE migration = $1", &[&migration])
        .await
        .map_err(|error| classify(error, what))?
        .iter()
        .map(|row| StoredChunk {
            table: TableName::new(row.get::<_, String>(0), row.get::<_, String>(1)),
            index: row.get::<_, i32>(2).into(),
            range: row.get(3),
            done: row.get(4),
            rows: row.get(5),
            snapshot_position: row.get(6),
        })
        .collect();
    stored.decode(&STORE)
}

pub(crate) async fn set_table_state(
    client: &impl GenericClient,
    migration: &str,
    table: &TableName,
    state: TableState,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO _ferry.table_state (migration, table_schema, table_name, state) VALUES ($1, $2, $3, $4)
             ON CONFLICT (migration, table_schema, table_name) DO UPDATE SET state = EXCLUDED.state, note = NULL",
            &[&migration, &table.schema, &table.name, &state.as_str()],
        )
        .await
        .map_err(|error| classify(error, "storing a table state"))?;
    Ok(())
}

pub(crate) async fn save_plan(
    client: &impl GenericClient,
    migration: &str,
    table: &TableName,
    chunks: &[Chunk],
) -> Result<()> {
    let what = "storing a chunk plan";
    client
        .execute("DELETE FROM _ferry.chunk WHERE migration = $1 AND table_schema = $2 AND table_name = $3", &[&migration, &table.schema, &table.name])
        .await
        .map_err(|error| classify(error, what))?;
    let indexes: Vec<i32> = chunks.iter().map(|chunk| chunk.index as i32).collect();
    let ranges: Vec<String> = chunks
        .iter()
        .map(|chunk| encode_range(&chunk.range))
        .collect::<Result<_>>()?;
    client
        .execute(
            "INSERT INTO _ferry.chunk (migration, table_schema, table_name, chunk_index, key_range)
             SELECT $1, $2, $3, chunk_index, key_range FROM unnest($4::int[], $5::text[]) AS plan(chunk_index, key_range)",
            &[&migration, &table.schema, &table.name, &indexes, &ranges],
        )
        .await
        .map_err(|error| classify(error, what))?;
    set_table_state(client, migration, table, TableState::Copying).await
}

/// Locks chunk `chunk` of `table` for the transaction that is about to load it, and tells
/// whether it is done already (with its row count). A transaction that loaded the chunk but was
/// still committing when its process died (or timed out) makes this wait for its outcome, so
/// the same chunk is never loaded twice (the target has no primary key during the copy to
/// refuse a second copy).
pub(crate) async fn claim_chunk(
    client: &impl GenericClient,
    migration: &str,
    table: &TableName,
    chunk: u32,
) -> Result<Option<u64>> {
    let row = client
        .query_opt(
            "SELECT done, rows FROM _ferry.chunk WHERE migration = $1 AND table_schema = $2 AND table_name = $3 AND chunk_index = $4 FOR UPDATE",
            &[&migration, &table.schema, &table.name, &(chunk as i32)],
        )
        .await
        .map_err(|error| classify(error, "claiming a chunk"))?
        .ok_or_else(|| {
            Error::definite(
                "state.chunk",
                format!("chunk {chunk} of {table} is not in the plan"),
            )
        })?;
    Ok(row
        .get::<_, bool>(0)
        .then(|| row.get::<_, i64>(1).max(0) as u64))
}

pub(crate) async fn mark_chunk_done(
    client: &impl GenericClient,
    migration: &str,
    table: &TableName,
    chunk: u32,
    rows: u64,
    snapshot_position: Option<Position>,
) -> Result<()> {
    let position = snapshot_position.map(|position| position.to_storage());
    let updated = client
        .execute(
            "UPDATE _ferry.chunk SET done = true, rows = $5, snapshot_position = $6 WHERE migration = $1 AND table_schema = $2 AND table_name = $3 AND chunk_index = $4 AND NOT done",
            &[&migration, &table.schema, &table.name, &(chunk as i32), &(rows as i64), &position],
        )
        .await
        .map_err(|error| classify(error, "marking a chunk done"))?;
    if updated != 1 {
        return Err(Error::definite(
            "state.chunk",
            format!(
                "chunk {chunk} of {table} is not in the plan, or another transaction loaded it"
            ),
        ));
    }
    Ok(())
}

pub(crate) async fn save_checkpoint(
    client: &impl GenericClient,
    migration: &str,
    position: Position,
    commit_time_unix_micros: Option<i64>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO _ferry.stream (migration, position, commit_time_unix_micros, updated_at) VALUES ($1, $2, $3, clock_timestamp())
             ON CONFLICT (migration) DO UPDATE SET position = EXCLUDED.position,
                 commit_time_unix_micros = coalesce(EXCLUDED.commit_time_unix_micros, _ferry.stream.commit_time_unix_micros),
                 updated_at = EXCLUDED.updated_at",
            &[&migration, &position.to_storage(), &commit_time_unix_micros],
        )
        .await
        .map_err(|error| classify(error, "storing the stream checkpoint"))?;
    Ok(())
}

/// Runs statements that take the migration name as `$1`, in order.
pub(crate) async fn execute_for_migration(
    client: &impl GenericClient,
    migration: &str,
    what: &str,
    statements: &[&str],
) -> Result<()> {
    for sql in statements {
        client
            .execute(*sql, &[&migration])
            .await
            .map_err(|error| classify(error, what))?;
    }
    Ok(())
}

/// Marks a table failed, with the reason, inside the transaction of the batch that skips it.
pub(crate) async fn set_table_failed(
    client: &impl GenericClient,
    migration: &str,
    table: &TableName,
    reason: &str,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO _ferry.table_state (migration, table_schema, table_name, state, note) VALUES ($1, $2, $3, 'failed', $4)
             ON CONFLICT (migration, table_schema, table_name) DO UPDATE SET state = 'failed', note = EXCLUDED.note",
            &[&migration, &table.schema, &table.name, &reason],
        )
        .await
        .map_err(|error| classify(error, "marking a table failed"))?;
    Ok(())
}

/// The switch-over record of `migration` (the default when none is stored).
pub(crate) async fn load_cutover(
    client: &impl GenericClient,
    migration: &str,
) -> Result<CutoverRecord> {
    let what = "reading the switch-over record";
    if !state_table_exists(client, "cutover", what).await? {
        return Ok(CutoverRecord::default());
    }
    let record = client
        .query_opt(
            "SELECT record FROM _ferry.cutover WHERE migration = $1",
            &[&migration],
        )
        .await
        .map_err(|error| classify(error, what))?
        .map(|row| row.get(0));
    decode_cutover(record, "_ferry.cutover")
}

pub(crate) async fn save_cutover(
    client: &impl GenericClient,
    migration: &str,
    record: &CutoverRecord,
) -> Result<()> {
    let text = encode_cutover(record)?;
    client
        .execute(
            "INSERT INTO _ferry.cutover (migration, record, updated_at) VALUES ($1, $2, clock_timestamp())
             ON CONFLICT (migration) DO UPDATE SET record = EXCLUDED.record, updated_at = EXCLUDED.updated_at",
            &[&migration, &text],
        )
        .await
        .map_err(|error| classify(error, "storing the switch-over record"))?;
    Ok(())
}

/// Notes that these tables received changes, inside the transaction that applies them.
pub(crate) async fn touch_tables(
    client: &impl GenericClient,
    migration: &str,
    tables: &[&TableName],
) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let schemas: Vec<&str> = tables.iter().map(|table| table.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|table| table.name.as_str()).collect();
    client
        .execute(
            "UPDATE _ferry.table_state SET last_change_at = clock_timestamp()
             FROM unnest($2::text[], $3::text[]) AS changed(table_schema, table_name)
             WHERE migration = $1 AND _ferry.table_state.table_schema = changed.table_schema AND _ferry.table_state.table_name = changed.table_name",
            &[&migration, &schemas, &names],
        )
        .await
        .map_err(|error| classify(error, "noting which tables changed"))?;
    Ok(())
}

/// The tables of `migration` that received changes within the last `seconds`.
pub(crate) async fn tables_changed_since(
    client: &impl GenericClient,
    migration: &str,
    seconds: f64,
) -> Result<Vec<TableName>> {
    Ok(client
        .query(
            "SELECT table_schema, table_name FROM _ferry.table_state
             WHERE migration = $1 AND last_change_at > clock_timestamp() - make_interval(secs => $2)",
            &[&migration, &seconds],
        )
        .await
        .map_err(|error| classify(error, "reading which tables changed lately"))?
        .iter()
        .map(|row| TableName::new(row.get::<_, String>(0), row.get::<_, String>(1)))
        .collect())
}

pub(crate) async fn save_copy_end(
    client: &impl GenericClient,
    migration: &str,
    position: Position,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO _ferry.copy_end (migration, position) VALUES ($1, $2)
             ON CONFLICT (migration) DO UPDATE SET position = EXCLUDED.position",
            &[&migration, &position.to_storage()],
        )
        .await
        .map_err(|error| classify(error, "storing where the copy ended"))?;
    Ok(())
}
