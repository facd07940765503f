//! What a verification compares and reports. Digests and row hashes are opaque strings that are
//! equal on both sides exactly when the rows are equal under the connector pair's canonical
//! encoding.

use serde::{Deserialize, Serialize};

use crate::state::KeyRange;

use crate::position::Position;
use crate::schema::TableName;
use crate::value::Value;

/// An order-independent digest of the rows of one key range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDigest {
    pub rows: u64,
    pub digest: String,
    /// For a source: a log position at or after every change the digest saw. `None` for a target.
    pub position: Option<Position>,
}

/// One row's key and the hash of its canonical encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct RowHash {
    pub key: Vec<Value>,
    /// The key in a stable text form (for reports and for matching rows across sides).
    pub key_text: String,
    pub hash: String,
}

/// Rows that differ, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// On both, with different values.
    Different,
    /// More than one row with this key on the target.
    Duplicate,
}

/// One differing row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub kind: DifferenceKind,
    /// The key in text form, e.g. `(42)` or `(7,"sku-1")`.
    pub key: String,
    #[serde(skip)]
    pub key_values: Vec<Value>,
}

/// The outcome for one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TableReport {
    pub table: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub ranges: usize,
    pub ranges_different: usize,
    /// Column or type mismatches between the two definitions.
    pub schema_differences: Vec<String>,
    pub differences: Vec<Difference>,
    /// Rows rewritten on the target by `--repair`.
    pub repaired: u64,
    /// Differences left after repair and re-verification.
    pub remaining_after_repair: usize,
    /// The migration's state of a table it has not finished copying (`copying`, `failed`,
    /// ...): its rows and keys are not all there yet, so its differences say nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_copied: Option<String>,
}

impl TableReport {
    pub fn is_equal(&self) -> bool {
        self.not_copied.is_none()
            && self.schema_differences.is_empty()
            && (self.differences.is_empty()
                || (self.repaired > 0 && self.remaining_after_repair == 0))
    }

    pub fn count(&self, kind: DifferenceKind) -> usize {
        self.differences
            .iter()
            .filter(|difference| difference.kind == kind)
            .count()
    }
}

/// A planned verification range and, once checked, its outcome: what an interrupted
/// verification resumes from.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedRange {
    pub table: TableName,
    pub index: u32,
    pub range: KeyRange,
    pub outcome: Option<RangeOutcome>,
}

/// What checking one range found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeOutcome {
    pub source_rows: u64,
    pub target_rows: u64,
    pub differences: Vec<StoredDifference>,
}

/// A difference with its key values, for storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDifference {
    pub kind: DifferenceKind,
    pub key: String,
    pub key_values: Vec<Value>,
}

impl From<&Difference> for StoredDifference {
    fn from(difference: &Difference) -> Self {
        StoredDifference {
            kind: difference.kind,
            key: difference.key.clone(),
            key_values: difference.key_values.clone(),
        }
    }
}

impl From<StoredDifference> for Difference {
    fn from(stored: StoredDifference) -> Self {
        Difference {
            kind: stored.kind,
            key: stored.key,
            key_values: stored.key_values,
        }
    }
}
/// Whether a stored verification was clean, from its counts of ranges, of ranges checked and of
/// ranges with differences (`None`: none stored, never verified).
pub fn verification_verdict(ranges: i64, checked: i64, different: i64) -> Option<bool> {
    (ranges > 0).then_some(checked == ranges && different == 0)
}
