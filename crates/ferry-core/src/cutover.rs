//! The switch-over phases of a migration and the record that persists them.
//!
//! ```text
//!   replicating --reads--> reads-switched --fence--> fenced --drain, reverse--> writes-switched --> done
//!        ^                        |                    |                             |
//!        +------- rollback -------+--------------------+------ rolling-back <--------+
//! ```
//!
//! The record lives on the target (the new database) next to the stream checkpoint. Every
//! transition is stored before the action it announces, so a crash at any point leaves a record
//! from which `cutover` or `rollback` can finish the job: fencing and unfencing are idempotent.

use serde::{Deserialize, Serialize};

/// Where a migration stands in its switch-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CutoverPhase {
    /// The old database takes reads and writes; the new one follows.
    #[default]
    Replicating,
    /// Readers moved to the new database; writes still go to the old one.
    ReadsSwitched,
    /// Writes on the old database are blocked while the stream drains to lag zero.
    Fenced,
    /// The new database takes writes; a reverse stream keeps the old one in sync.
    WritesSwitched,
    /// Going back: writes on the new database are blocked while the reverse stream drains.
    RollingBack,
    /// Streams and their slots are removed; the old database no longer follows.
    Done,
}

/// A database in a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// The database being moved from.
    Source,
    /// The database being moved to.
    Target,
}

impl CutoverPhase {
    pub const ALL: [CutoverPhase; 6] = [
        CutoverPhase::Replicating,
        CutoverPhase::ReadsSwitched,
        CutoverPhase::Fenced,
        CutoverPhase::WritesSwitched,
        CutoverPhase::RollingBack,
        CutoverPhase::Done,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            CutoverPhase::Replicating => "replicating",
            CutoverPhase::ReadsSwitched => "reads-switched",
            CutoverPhase::Fenced => "fenced",
            CutoverPhase::WritesSwitched => "writes-switched",
            CutoverPhase::RollingBack => "rolling-back",
            CutoverPhase::Done => "done",
        }
    }

    pub fn parse(text: &str) -> Option<CutoverPhase> {
        CutoverPhase::ALL
            .into_iter()
            .find(|phase| phase.as_str() == text)
    }

    /// Where applications should read.
    pub fn read_primary(&self) -> Side {
        match self {
            CutoverPhase::Replicating | CutoverPhase::RollingBack => Side::Source,
            _ => Side::Target,
        }
    }

    /// Where applications should write; `None` while writes are fenced.
    pub fn write_primary(&self) -> Option<Side> {
        match self {
            CutoverPhase::Replicating | CutoverPhase::ReadsSwitched => Some(Side::Source),
            CutoverPhase::Fenced | CutoverPhase::RollingBack => None,
            CutoverPhase::WritesSwitched | CutoverPhase::Done => Some(Side::Target),
        }
    }

    /// The phases in which the reverse stream (new to old) runs.
    pub fn streams_back(&self) -> bool {
        matches!(
            self,
            CutoverPhase::WritesSwitched | CutoverPhase::RollingBack
        )
    }

    /// The phases in which readers or writers use the new database, so its tables must never be
    /// emptied and copied again.
    pub fn target_in_use(&self) -> bool {
        !matches!(self, CutoverPhase::Replicating)
    }
}

impl std::fmt::Display for CutoverPhase {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The persisted switch-over state of a migration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CutoverRecord {
    pub phase: CutoverPhase,
    /// The phase to return to when a fence is aborted.
    pub before_fence: Option<CutoverPhase>,
    /// When the current fence began (Unix microseconds).
    pub fenced_at_unix_micros: Option<i64>,
    /// Writes were blocked this long during the last switch (fence to writes-switched, or to
    /// the old database taking writes again after a rollback), in milliseconds.
    pub last_downtime_millis: Option<i64>,
    /// When the record last changed (Unix microseconds).
    pub updated_unix_micros: i64,
}

/// The name of the reverse migration (new to old) that goes with `migration`.
pub fn reverse_name(migration: &str) -> String {
    format!("{migration}_reverse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_and_route_applications() {
        for phase in CutoverPhase::ALL {
            assert_eq!(CutoverPhase::parse(phase.as_str()), Some(phase));
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.as_str()));
        }
        assert_eq!(CutoverPhase::parse("nope"), None);
        assert_eq!(
            CutoverPhase::Replicating.write_primary(),
            Some(Side::Source)
        );
        assert_eq!(CutoverPhase::Fenced.write_primary(), None);
        assert_eq!(
            CutoverPhase::WritesSwitched.write_primary(),
            Some(Side::Target)
        );
        assert_eq!(CutoverPhase::ReadsSwitched.read_primary(), Side::Target);
        assert!(CutoverPhase::RollingBack.streams_back());
        assert!(!CutoverPhase::Fenced.streams_back());
        assert!(!CutoverPhase::Replicating.target_in_use());
        assert!(CutoverPhase::ReadsSwitched.target_in_use());
    }
}
