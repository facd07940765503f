//! The move's durable state: one SQLite file (WAL, `synchronous=FULL`) with, per partition,
//! the offset map and the settled positions, and the groups switched.
//!
//! Contract: a run or position is written only after the target acknowledged every record it
//! covers, so the state never claims a record the target does not hold. The target may hold
//! more (records acknowledged after the last save, or in flight at a crash): the mirror finds
//! them again by reading the target partition's tail (see `mirror`). One process writes (a lock
//! file beside the database refuses a second `move`); `status` and `switch` read beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_core::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};

use crate::map::{PartitionMap, Run};

/// One partition's settled state.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionState {
    pub topic: String,
    pub partition: i32,
    /// The target partition's end when the move began on it.
    pub first_target: i64,
    /// Where the move began reading the source partition (0: its beginning).
    pub first_source: i64,
    /// Every source record before it is on the target.
    pub settled_source: i64,
    /// The offset after the last record ferry wrote to the target partition.
    pub next_target: i64,
    /// The source partition's end when last seen (for the lag).
    pub source_end: i64,
    pub copied: i64,
    pub bytes: i64,
    pub updated_ms: i64,
    /// The copy's rate over the last second or so.
    pub records_per_second: f64,
    pub bytes_per_second: f64,
}

impl PartitionState {
    /// Source records not copied yet, as far as the move last saw the source's end.
    pub fn lag(&self) -> i64 {
        (self.source_end - self.settled_source).max(0)
    }
}

/// What a save changes for one partition.
#[derive(Debug, Clone)]
pub struct PartitionUpdate {
    pub state: PartitionState,
    /// Runs that are new or grew since the last save (written whole, by their start).
    pub runs: Vec<Run>,
}

/// A group's switch, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SwitchRecord {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub source_offset: i64,
    pub target_offset: i64,
    pub duplicates: i64,
    pub at_ms: i64,
}

pub struct State {
    connection: Connection,
    path: PathBuf,
    _lock: Option<std::fs::File>,
}

fn state_error(path: &Path, what: &str, error: impl std::fmt::Display) -> Error {
    Error::operator(
        "kafka.state",
        format!("{what} the move's state {}: {error}", path.display()),
    )
    .with_hint("check the path (--state) and its permissions; the file is ferry's own")
}

const SCHEMA: &str = "
create table if not exists clusters (
    source text not null,
    target text not null
);
create table if not exists partitions (
    topic text not null,
    partition_number integer not null,
    first_target integer not null,
    first_source integer not null,
    settled_source integer not null,
    next_target integer not null,
    source_end integer not null,
    copied integer not null,
    bytes integer not null,
    updated_ms integer not null,
    records_per_second real not null default 0,
    bytes_per_second real not null default 0,
    primary key (topic, partition_number)
);
create table if not exists runs (
    topic text not null,
    partition_number integer not null,
    source_start integer not null,
    target_start integer not null,
    count integer not null,
    primary key (topic, partition_number, source_start)
);
create table if not exists switches (
    group_name text not null,
    topic text not null,
    partition_number integer not null,
    source_offset integer not null,
    target_offset integer not null,
    duplicates integer not null,
    at_ms integer not null,
    primary key (group_name, topic, partition_number)
);
";

impl State {
    /// Opens (creating) the state for `move`: takes the lock, records which clusters it is for
    /// and refuses a state made for other clusters.
    pub fn open_for_move(path: &Path, source: &str, target: &str) -> Result<State> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|error| state_error(path, "cannot create the folder of", error))?;
        }
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| state_error(&lock_path, "cannot open the lock of", error))?;
        if lock.try_lock().is_err() {
            return Err(Error::operator(
                "kafka.already_running",
                format!("another `ferry kafka move` uses {}", path.display()),
            )
            .with_hint(
                "stop the other one first; two mirrors of one move would duplicate records",
            ));
        }
        let mut state = State::open(path)?;
        state._lock = Some(lock);
        let recorded: Option<(String, String)> = state
            .connection
            .query_row("select source, target from clusters", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(|error| state_error(path, "cannot read", error))?;
        match recorded {
            None => {
                state
                    .connection
                    .execute(
                        "insert into clusters (source, target) values (?1, ?2)",
                        params![source, target],
                    )
                    .map_err(|error| state_error(path, "cannot write", error))?;
            }
            Some((recorded_source, recorded_target))
                if recorded_source != source || recorded_target != target =>
            {
                return Err(Error::operator(
                    "kafka.state_mismatch",
                    format!(
                        "{} belongs to the move from {recorded_source} to {recorded_target}, not from {source} to {target}",
                        path.display()
                    ),
                )
                .with_hint("give this move its own --name (or --state)"));
            }
            Some(_) => {}
        }
        Ok(state)
    }

    /// Opens an existing state to read it (`status`, `switch`, `verify`).
    pub fn open_existing(path: &Path) -> Result<State> {
        if !path.exists() {
            return Err(Error::operator(
                "kafka.no_state",
                format!("no move state at {}", path.display()),
            )
            .with_hint("run `ferry kafka move` first, with the same --name (or --state)"));
        }
        State::open(path)
    }

    fn open(path: &Path) -> Result<State> {
        let connection =
            Connection::open(path).map_err(|error| state_error(path, "cannot open", error))?;
        connection
            .busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|error| state_error(path, "cannot open", error))?;
        connection
            .execute_batch("pragma journal_mode = wal; pragma synchronous = full;")
            .map_err(|error| state_error(path, "cannot open", error))?;
        connection
            .execute_batch(SCHEMA)
            .map_err(|error| state_error(path, "cannot set up", error))?;
        Ok(State {
            connection,
            path: path.to_path_buf(),
            _lock: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every partition's settled state.
    pub fn partitions(&self) -> Result<BTreeMap<(String, i32), PartitionState>> {
        let mut statement = self
            .connection
            .prepare(
                "select topic, partition_number, first_target, settled_source, next_target,
                        source_end, copied, bytes, updated_ms, first_source,
                        records_per_second, bytes_per_second
                 from partitions order by topic, partition_number",
            )
            .map_err(|error| state_error(&self.path, "cannot read", error))?;
        let rows = statement
            .query_map([], |row| {
                Ok(PartitionState {
                    topic: row.get(0)?,
                    partition: row.get(1)?,
                    first_target: row.get(2)?,
                    settled_source: row.get(3)?,
                    next_target: row.get(4)?,
                    source_end: row.get(5)?,
                    copied: row.get(6)?,
                    bytes: row.get(7)?,
                    updated_ms: row.get(8)?,
                    first_source: row.get(9)?,
                    records_per_second: row.get(10)?,
                    bytes_per_second: row.get(11)?,
                })
            })
            .map_err(|error| state_error(&self.path, "cannot read", error))?;
        let mut found = BTreeMap::new();
        for row in rows {
            let row = row.map_err(|error| state_error(&self.path, "cannot read", error))?;
            found.insert((row.topic.clone(), row.partition), row);
        }
        Ok(found)
    }

    /// The runs of one partition, ascending.
    pub fn runs(&self, topic: &str, partition: i32) -> Result<Vec<Run>> {
        let mut statement = self
            .connection
            .prepare(
                "select source_start, target_start, count from runs
                 where topic = ?1 and partition_number = ?2 order by source_start",
            )
            .map_err(|error| state_error(&self.path, "cannot read", error))?;
        let rows = statement
            .query_map(params![topic, partition], |row| {
                Ok(Run {
                    source_start: row.get(0)?,
                    target_start: row.get(1)?,
                    count: row.get(2)?,
                })
            })
            .map_err(|error| state_error(&self.path, "cannot read", error))?;
        rows.collect::<rusqlite::Result<Vec<Run>>>()
            .map_err(|error| state_error(&self.path, "cannot read", error))
    }

    /// The offset map of one partition (None when the move never began on it).
    pub fn map(&self, topic: &str, partition: i32) -> Result<Option<PartitionMap>> {
        let partitions = self.partitions()?;
        let Some(state) = partitions.get(&(topic.to_string(), partition)) else {
            return Ok(None);
        };
        Ok(Some(PartitionMap {
            runs: self.runs(topic, partition)?,
            first_target: state.first_target,
            first_source: state.first_source,
            settled_source: state.settled_source,
        }))
    }

    /// Writes `updates` in one transaction.
    pub fn save(&mut self, updates: &[PartitionUpdate]) -> Result<()> {
        let path = self.path.clone();
        let transaction = self
            .connection
            .transaction()
            .map_err(|error| state_error(&path, "cannot write", error))?;
        {
            let mut run_statement = transaction
                .prepare_cached(
                    "insert or replace into runs
                     (topic, partition_number, source_start, target_start, count)
                     values (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|error| state_error(&path, "cannot write", error))?;
            let mut partition_statement = transaction
                .prepare_cached(
                    "insert or replace into partitions
                     (topic, partition_number, first_target, settled_source, next_target,
                      source_end, copied, bytes, updated_ms, first_source,
                      records_per_second, bytes_per_second)
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(|error| state_error(&path, "cannot write", error))?;
            for update in updates {
                let state = &update.state;
                for run in &update.runs {
                    run_statement
                        .execute(params![
                            state.topic,
                            state.partition,
                            run.source_start,
                            run.target_start,
                            run.count
                        ])
                        .map_err(|error| state_error(&path, "cannot write", error))?;
                }
                partition_statement
                    .execute(params![
                        state.topic,
                        state.partition,
                        state.first_target,
                        state.settled_source,
                        state.next_target,
                        state.source_end,
                        state.copied,
                        state.bytes,
                        state.updated_ms,
                        state.first_source,
                        state.records_per_second,
                        state.bytes_per_second
                    ])
                    .map_err(|error| state_error(&path, "cannot write", error))?;
            }
        }
        transaction
            .commit()
            .map_err(|error| state_error(&path, "cannot write", error))
    }

    pub fn record_switch(&mut self, records: &[SwitchRecord]) -> Result<()> {
        let path = self.path.clone();
        let transaction = self
            .connection
            .transaction()
            .map_err(|error| state_error(&path, "cannot write", error))?;
        for record in records {
            transaction
                .execute(
                    "insert or replace into switches
                     (group_name, topic, partition_number, source_offset, target_offset,
                      duplicates, at_ms)
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        record.group,
                        record.topic,
                        record.partition,
                        record.source_offset,
                        record.target_offset,
                        record.duplicates,
                        record.at_ms
                    ],
                )
                .map_err(|error| state_error(&path, "cannot write", error))?;
        }
        transaction
            .commit()
            .map_err(|error| state_error(&path, "cannot write", error))
    }

    pub fn switches(&self) -> Result<Vec<SwitchRecord>> {
        let mut statement = self
            .connection
            .prepare(
                "select group_name, topic, partition_number, source_offset, target_offset,
                        duplicates, at_ms
                 from switches order by group_name, topic, partition_number",
            )
            .map_err(|error| state_error(&self.path, "cannot read", error))?;
        let rows = statement
            .query_map([], |row| {
                Ok(SwitchRecord {
                    group: row.get(0)?,
                    topic: row.get(1)?,
                    partition: row.get(2)?,
                    source_offset: row.get(3)?,
                    target_offset: row.get(4)?,
                    duplicates: row.get(5)?,
                    at_ms: row.get(6)?,
                })
            })
            .map_err(|error| state_error(&self.path, "cannot read", error))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|error| state_error(&self.path, "cannot read", error))
    }
}

/// Where a move's state lives by default: `$FERRY_STATE_DIR`, else `$XDG_STATE_HOME/ferry`,
/// else `~/.local/state/ferry`, in a file named after the move and its two clusters.
pub fn default_path(name: &str, source: &str, target: &str) -> PathBuf {
    state_folder().join(format!(
        "kafka-{}-{:016x}.db",
        safe_name(name),
        fingerprint(&format!("{source}\n{target}"))
    ))
}

/// The state of the move between these clusters when no name is given: the default name's,
/// or else the only move between them (None when there are several or none).
pub fn only_path(source: &str, target: &str) -> Option<PathBuf> {
    let default = default_path(DEFAULT_NAME, source, target);
    if default.exists() {
        return Some(default);
    }
    let suffix = format!("-{:016x}.db", fingerprint(&format!("{source}\n{target}")));
    let mut found: Vec<PathBuf> = std::fs::read_dir(state_folder())
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("kafka-") && name.ends_with(&suffix))
        })
        .collect();
    (found.len() == 1).then(|| found.remove(0))
}

/// The name a move has when none is given.
pub const DEFAULT_NAME: &str = "ferry";

fn state_folder() -> PathBuf {
    std::env::var_os("FERRY_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_STATE_HOME").map(|home| PathBuf::from(home).join("ferry"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state/ferry"))
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

fn safe_name(name: &str) -> String {
    name.chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '-' || character == '_' {
                character
            } else {
                '_'
            }
        })
        .collect()
}

/// FNV-1a: a stable name for a pair of clusters (not a security measure).
fn fingerprint(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_reads_back_a_partition_map_and_refuses_other_clusters() {
        let folder = std::env::temp_dir().join(format!("ferry-kafka-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        let path = folder.join("move.db");
        let mut state = State::open_for_move(&path, "a:1", "b:2").unwrap();
        let update = |settled, runs: Vec<Run>| PartitionUpdate {
            state: PartitionState {
                topic: "orders".into(),
                partition: 1,
                first_target: 0,
                first_source: 0,
                settled_source: settled,
                next_target: runs.last().map(Run::target_end).unwrap_or(0),
                source_end: 10,
                copied: 3,
                bytes: 30,
                updated_ms: 1,
                records_per_second: 0.0,
                bytes_per_second: 0.0,
            },
            runs,
        };
        state
            .save(&[update(
                2,
                vec![Run {
                    source_start: 0,
                    target_start: 0,
                    count: 2,
                }],
            )])
            .unwrap();
        state
            .save(&[update(
                5,
                vec![
                    Run {
                        source_start: 0,
                        target_start: 0,
                        count: 3,
                    },
                    Run {
                        source_start: 4,
                        target_start: 3,
                        count: 1,
                    },
                ],
            )])
            .unwrap();
        let map = state.map("orders", 1).unwrap().unwrap();
        assert_eq!(map.runs.len(), 2);
        assert_eq!(map.runs[0].count, 3);
        assert_eq!(map.settled_source, 5);
        assert!(state.map("orders", 0).unwrap().is_none());
        // A second mover on the same file is refused while the first holds it.
        assert!(State::open_for_move(&path, "a:1", "b:2").is_err());
        drop(state);
        assert!(State::open_for_move(&path, "a:1", "c:3").is_err());
        assert!(State::open_for_move(&path, "a:1", "b:2").is_ok());
        let _ = std::fs::remove_dir_all(&folder);
    }

    #[test]
    fn default_paths_differ_by_name_and_clusters() {
        let one = default_path("m", "a:1", "b:2");
        assert_ne!(one, default_path("m", "a:1", "b:3"));
        assert_ne!(one, default_path("n", "a:1", "b:2"));
        assert!(default_path("a/b c", "x", "y")
            .to_string_lossy()
            .contains("kafka-a_b_c-"));
    }
}
