//! The persisted state of a migration: where the change stream stands and how far each table's
//! copy has come. A sink stores it next to the data, in the same transactions, so that the state
//! never claims more than the target holds.

pub mod stored;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::position::Position;
use crate::schema::TableName;
use crate::value::Value;

/// The handoff state of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TableState {
    /// Selected, no chunk plan yet. Set by the engine when a table enters the migration. The
    /// target table holds no committed chunk of ours, so it may be emptied before the copy.
    Pending,
    /// Chunks are planned and being copied. Set by the engine with the plan; each chunk is marked
    /// done by the sink in the same transaction that commits its rows, so a restart copies only
    /// the chunks not marked done.
    Copying,
    /// Every chunk is committed. Set by the engine after the last chunk. From here on the change
    /// stream alone keeps the table current; it replays from the stream checkpoint, which
    /// precedes every snapshot the chunks were read under, so no change is missed.
    Copied,
    /// The target rejected a change to this table (a definite failure). Set by the sink in the
    /// same transaction as the first batch applied without the table's changes; from then on its
    /// changes are skipped. The next run copies the table afresh (after the operator fixed the
    /// cause), which the stream then keeps current, as for a table added to the selection.
    Failed,
}

impl TableState {
    pub fn as_str(&self) -> &'static str {
        match self {
            TableState::Pending => "pending",
            TableState::Copying => "copying",
            TableState::Copied => "copied",
            TableState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<TableState> {
        match text {
            "pending" => Some(TableState::Pending),
            "copying" => Some(TableState::Copying),
            "copied" => Some(TableState::Copied),
            "failed" => Some(TableState::Failed),
            _ => None,
        }
    }
}

/// One key range of a table: rows with `lower <= key < upper`; an absent bound is open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRange {
    pub lower: Option<Vec<Value>>,
    pub upper: Option<Vec<Value>>,
}

impl KeyRange {
    /// The ranges between ascending `bounds`: below the first, between each two, and from the
    /// last on, so that together they cover every key.
    pub fn covering(bounds: Vec<Vec<Value>>) -> Vec<KeyRange> {
        let mut ranges = Vec::with_capacity(bounds.len() + 1);
        let mut lower = None;
        for bound in bounds {
            ranges.push(KeyRange {
                lower: lower.take(),
                upper: Some(bound.clone()),
            });
            lower = Some(bound);
        }
        ranges.push(KeyRange { lower, upper: None });
        ranges
    }
}

/// A planned chunk and whether its rows are committed on the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub index: u32,
    pub range: KeyRange,
    pub done: bool,
    pub rows: u64,
    /// For a done chunk: the position its snapshot was exact at, when the source knew it. The
    /// stream leaves out changes to a table without a key that this snapshot already holds.
    #[serde(skip)]
    pub snapshot_position: Option<Position>,
}

/// How far one table has come.
#[derive(Debug, Clone, PartialEq)]
pub struct TableProgress {
    pub state: TableState,
    pub chunks: Vec<Chunk>,
    /// Why the table failed, for a failed table.
    pub note: Option<String>,
}

impl TableProgress {
    pub fn rows_copied(&self) -> u64 {
        self.chunks.iter().map(|chunk| chunk.rows).sum()
    }
}

/// Where the change stream stands: every change before `position` is durable on the target.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamCheckpoint {
    pub position: Position,
    /// When the source committed the last applied transaction, if any was applied.
    pub commit_time_unix_micros: Option<i64>,
    /// When the checkpoint was written, by the target's clock.
    pub updated_unix_micros: i64,
}

/// The whole persisted state of one migration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MigrationState {
    /// `None` until the change stream was created.
    pub stream: Option<StreamCheckpoint>,
    pub tables: BTreeMap<TableName, TableProgress>,
    /// The source position when the last copy ended: until the stream passes it, rows on the
    /// target may be newer than the changes it replays.
    pub copy_end: Option<crate::Position>,
}

/// Failures a migration rode out (retried or waited out), as recorded on the target: how many,
/// and the latest few.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FailureSummary {
    pub count: i64,
    /// (when, as `YYYY-MM-DDTHH:MM:SSZ`; code; message), newest first.
    pub latest: Vec<(String, String, String)>,
}

/// How much log a migration's stream holds back on a source that keeps log for its streams (a
/// PostgreSQL replication slot's WAL).
#[derive(Debug, Clone, Serialize)]
pub struct StreamRetention {
    /// Whether a process reads the stream now.
    pub active: bool,
    /// Log kept on the source's disk for the stream, in bytes.
    pub retained_bytes: i64,
    /// The source's word for how safe that log is (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: Option<String>,
    /// Log that may still be written before the source gives the stream up (`None`: no limit).
    pub safe_wal_bytes: Option<i64>,
    /// What the source calls the stream (its slot), for status lines.
    #[serde(skip)]
    pub stream: String,
    /// The source's warning when it is close to giving the stream up, with what to do.
    #[serde(skip)]
    pub warning: Option<String>,
}
