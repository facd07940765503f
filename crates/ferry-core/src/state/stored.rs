//! The one reading and writing of ferry's stored state, for every state store. A store (the
//! `_ferry` tables of a PostgreSQL or a MySQL target, or any other) runs its own statements and
//! hands the raw rows it read to [`StoredState::decode`]; it stores what [`encode_range`] and
//! [`encode_cutover`] give. So what a stored value means, how a damaged one is reported, and how
//! the pieces are put together is written once, and every store reports damage alike: an
//! operator error with a stable code, naming where the damage is, never a value dropped or
//! guessed.

use std::collections::BTreeMap;

use crate::cutover::CutoverRecord;
use crate::error::{Error, Result};
use crate::position::Position;
use crate::schema::TableName;
use crate::state::{
    Chunk, FailureSummary, KeyRange, MigrationState, StreamCheckpoint, TableProgress, TableState,
};
use crate::verify::{RangeOutcome, VerifiedRange};

/// A stream checkpoint as stored.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    /// [`Position::to_storage`]'s text.
    pub position: String,
    pub commit_time_unix_micros: Option<i64>,
    pub updated_unix_micros: i64,
}

/// A table's state as stored.
#[derive(Debug, Clone)]
pub struct StoredTable {
    pub name: TableName,
    /// [`TableState::as_str`]'s text.
    pub state: String,
    pub note: Option<String>,
}

/// A chunk of a table's copy plan as stored.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub table: TableName,
    pub index: i64,
    /// [`encode_range`]'s text.
    pub range: String,
    pub done: bool,
    pub rows: i64,
    /// [`Position::to_storage`]'s text, when the chunk recorded its snapshot position.
    pub snapshot_position: Option<String>,
}

/// Everything stored about one migration, as read.
#[derive(Debug, Clone, Default)]
pub struct StoredState {
    pub stream: Option<StoredCheckpoint>,
    /// [`Position::to_storage`]'s text of where the last copy ended.
    pub copy_end: Option<String>,
    pub tables: Vec<StoredTable>,
    /// Chunks of tables not in `tables` are left out (their table was forgotten).
    pub chunks: Vec<StoredChunk>,
}

/// The error for a stored value ferry cannot read: `store` names the table it is in (for
/// instance `_ferry.chunk`), `what` the value.
pub fn damaged(store: &str, what: &str) -> Error {
    Error::operator(
        "state.corrupt",
        format!("ferry's state on the target is unreadable: {what} in {store}"),
    )
    .with_hint("`ferry run --restart` forgets this migration's copy and stream state and copies every table again; otherwise delete this migration's rows from that table (other migrations' rows stay)")
}

/// Where a store keeps each part of a migration's state (table names as its dialect writes
/// them), so that an error names the table holding the damaged value.
#[derive(Debug, Clone, Copy)]
pub struct StoreNames {
    pub stream: &'static str,
    pub copy_end: &'static str,
    pub tables: &'static str,
    pub chunks: &'static str,
}

fn position(text: &str, store: &str, what: &str) -> Result<Position> {
    Position::from_storage(text).ok_or_else(|| damaged(store, &format!("{what} {text:?}")))
}

impl StoredCheckpoint {
    /// The checkpoint, or [`damaged`] when its position is unreadable.
    pub fn decode(self, store: &str) -> Result<StreamCheckpoint> {
        Ok(StreamCheckpoint {
            position: position(&self.position, store, "the stream position")?,
            commit_time_unix_micros: self.commit_time_unix_micros,
            updated_unix_micros: self.updated_unix_micros,
        })
    }
}

impl StoredState {
    /// The migration's state, or [`damaged`] naming the first unreadable value and its table.
    /// Each table's chunks come out ordered by index.
    pub fn decode(self, names: &StoreNames) -> Result<MigrationState> {
        let stream = self
            .stream
            .map(|checkpoint| checkpoint.decode(names.stream))
            .transpose()?;
        let copy_end = self
            .copy_end
            .map(|text| position(&text, names.copy_end, "where the copy ended"))
            .transpose()?;
        let mut tables: BTreeMap<TableName, TableProgress> = BTreeMap::new();
        for table in self.tables {
            let state = TableState::parse(&table.state).ok_or_else(|| {
                damaged(
                    names.tables,
                    &format!("table state {:?} of {}", table.state, table.name),
                )
            })?;
            tables.insert(
                table.name,
                TableProgress {
                    state,
                    chunks: Vec::new(),
                    note: table.note,
                },
            );
        }
        for chunk in self.chunks {
            let Some(progress) = tables.get_mut(&chunk.table) else {
                continue;
            };
            let store = names.chunks;
            let what = || format!("chunk {} of {}", chunk.index, chunk.table);
            let index = u32::try_from(chunk.index)
                .map_err(|_| damaged(store, &format!("the index of {}", what())))?;
            let range: KeyRange = serde_json::from_str(&chunk.range).map_err(|error| {
                damaged(store, &format!("the key range of {} ({error})", what()))
            })?;
            let snapshot_position = chunk
                .snapshot_position
                .map(|text| {
                    position(
                        &text,
                        store,
                        &format!("the snapshot position of {}", what()),
                    )
                })
                .transpose()?;
            progress.chunks.push(Chunk {
                index,
                range,
                done: chunk.done,
                rows: chunk.rows.max(0) as u64,
                snapshot_position,
            });
        }
        for progress in tables.values_mut() {
            progress.chunks.sort_by_key(|chunk| chunk.index);
        }
        Ok(MigrationState {
            stream,
            tables,
            copy_end,
        })
    }
}

/// A chunk's key range as stored.
pub fn encode_range(range: &KeyRange) -> Result<String> {
    serde_json::to_string(range).map_err(|error| {
        Error::definite(
            "state.encode",
            format!("a chunk range could not be stored: {error}"),
        )
    })
}

/// A switch-over record as stored.
pub fn encode_cutover(record: &CutoverRecord) -> Result<String> {
    serde_json::to_string(record).map_err(|error| {
        Error::definite(
            "state.encode",
            format!("the switch-over record could not be stored: {error}"),
        )
    })
}

/// The stored switch-over record (the default one when none is stored).
pub fn decode_cutover(text: Option<String>, store: &str) -> Result<CutoverRecord> {
    match text {
        None => Ok(CutoverRecord::default()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|error| damaged(store, &format!("the switch-over record ({error})"))),
    }
}

/// The failure summary from the number of failures and the latest ones, each (when in unix
/// microseconds, code, message), newest first.
pub fn failure_summary(count: i64, latest: Vec<(i64, String, String)>) -> FailureSummary {
    FailureSummary {
        count,
        latest: latest
            .into_iter()
            .map(|(at, code, message)| (crate::calendar::utc_second_text(at), code, message))
            .collect(),
    }
}

/// A range of a verification as stored.
#[derive(Debug, Clone)]
pub struct StoredVerifiedRange {
    pub table: TableName,
    pub index: i64,
    /// [`encode_range`]'s text.
    pub range: String,
    /// [`encode_outcome`]'s text, once the range was compared.
    pub outcome: Option<String>,
}

impl StoredVerifiedRange {
    /// The range, or [`damaged`] naming what is unreadable.
    pub fn decode(self, store: &str) -> Result<VerifiedRange> {
        let what = || format!("verification range {} of {}", self.index, self.table);
        let index = u32::try_from(self.index)
            .map_err(|_| damaged(store, &format!("the index of {}", what())))?;
        let range: KeyRange = serde_json::from_str(&self.range)
            .map_err(|error| damaged(store, &format!("the key range of {} ({error})", what())))?;
        let outcome = self
            .outcome
            .as_deref()
            .map(serde_json::from_str::<RangeOutcome>)
            .transpose()
            .map_err(|error| damaged(store, &format!("the outcome of {} ({error})", what())))?;
        Ok(VerifiedRange {
            table: self.table,
            index,
            range,
            outcome,
        })
    }
}

/// A verification range's outcome as stored.
pub fn encode_outcome(outcome: &RangeOutcome) -> Result<String> {
    serde_json::to_string(outcome).map_err(|error| {
        Error::definite(
            "state.encode",
            format!("a verification outcome could not be stored: {error}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    const NAMES: StoreNames = StoreNames {
        stream: "stream",
        copy_end: "copy_end",
        tables: "tables",
        chunks: "chunks",
    };

    fn table(name: &str) -> TableName {
        TableName::new("shop", name)
    }

    fn chunk(name: &str, index: i64, range: &str) -> StoredChunk {
        StoredChunk {
            table: table(name),
            index,
            range: range.into(),
            done: index == 0,
            rows: if index == 0 { 7 } else { 0 },
            snapshot_position: None,
        }
    }

    #[test]
    fn stored_rows_decode_into_the_state_with_chunks_in_order() {
        let range = encode_range(&KeyRange {
            lower: Some(vec![Value::Int64(1)]),
            upper: None,
        })
        .unwrap();
        let stored = StoredState {
            stream: Some(StoredCheckpoint {
                position: Position::Postgres(crate::Lsn(42)).to_storage(),
                commit_time_unix_micros: Some(5),
                updated_unix_micros: 6,
            }),
            copy_end: Some(Position::Postgres(crate::Lsn(40)).to_storage()),
            tables: vec![StoredTable {
                name: table("orders"),
                state: TableState::Copying.as_str().into(),
                note: None,
            }],
            chunks: vec![
                chunk("orders", 1, &range),
                chunk("orders", 0, &range),
                // A forgotten table's chunk.
                chunk("gone", 0, &range),
            ],
        };
        let state = stored.decode(&NAMES).unwrap();
        assert_eq!(
            state.stream.unwrap().position,
            Position::Postgres(crate::Lsn(42))
        );
        assert_eq!(state.copy_end, Some(Position::Postgres(crate::Lsn(40))));
        let orders = &state.tables[&table("orders")];
        let indexes: Vec<u32> = orders.chunks.iter().map(|chunk| chunk.index).collect();
        assert_eq!(indexes, vec![0, 1]);
        assert_eq!(orders.rows_copied(), 7);
        assert_eq!(state.tables.len(), 1);
    }

    #[test]
    fn a_damaged_value_is_named_never_dropped() {
        let damaged_cases = [
            StoredState {
                copy_end: Some("not a position".into()),
                ..StoredState::default()
            },
            StoredState {
                tables: vec![StoredTable {
                    name: table("orders"),
                    state: "halfway".into(),
                    note: None,
                }],
                ..StoredState::default()
            },
            StoredState {
                tables: vec![StoredTable {
                    name: table("orders"),
                    state: TableState::Copying.as_str().into(),
                    note: None,
                }],
                chunks: vec![chunk("orders", 0, "{not json")],
                ..StoredState::default()
            },
        ];
        for (stored, table) in damaged_cases
            .into_iter()
            .zip(["copy_end", "tables", "chunks"])
        {
            let error = stored.decode(&NAMES).unwrap_err();
            assert_eq!(error.code(), "state.corrupt", "{error}");
            assert!(
                error.to_string().contains(&format!(" in {table}")),
                "{error}"
            );
        }
        assert_eq!(
            decode_cutover(Some("{".into()), "_ferry.cutover")
                .unwrap_err()
                .code(),
            "state.corrupt"
        );
        assert_eq!(
            decode_cutover(None, "_ferry.cutover").unwrap(),
            CutoverRecord::default()
        );
    }
}
