//! Typed source positions. A position is comparable within its kind and never a string.

use std::fmt;

/// A PostgreSQL log sequence number: a byte offset in the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `X/Y` text form (both halves hexadecimal).
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Where in a source's change log a migration stands.
///
/// Ordering is only meaningful between positions of the same kind; comparing different kinds
/// yields `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// PostgreSQL: the end LSN of the last transaction applied.
    Postgres(Lsn),
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Position::Postgres(left), Position::Postgres(right)) => Some(left.cmp(right)),
        }
    }
}

impl Position {
    /// How far this position is ahead of `earlier` in the source's units (bytes of WAL for
    /// PostgreSQL); zero when it is not ahead.
    pub fn distance_from(&self, earlier: Position) -> u64 {
        match (self, earlier) {
            (Position::Postgres(Lsn(this)), Position::Postgres(Lsn(that))) => {
                this.saturating_sub(that)
            }
        }
    }

    /// A stable text form for storage: `postgres:X/Y`.
    pub fn to_storage(&self) -> String {
        match self {
            Position::Postgres(lsn) => format!("postgres:{lsn}"),
        }
    }

    /// Parses [`Position::to_storage`] output.
    pub fn from_storage(text: &str) -> Option<Position> {
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "postgres" => Lsn::parse(rest).map(Position::Postgres),
            _ => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Postgres(lsn) => write!(formatter, "{lsn}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_text() {
        for text in ["0/0", "0/16B3748", "1/0", "FFFFFFFF/FFFFFFFF"] {
            let lsn = Lsn::parse(text).unwrap();
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!(Lsn::parse("1/2").unwrap().0, (1u64 << 32) | 2);
        assert!(Lsn::parse("nonsense").is_none());
        assert!(Lsn::parse("1/XYZ").is_none());
    }

    #[test]
    fn positions_order_and_store() {
        let early = Position::Postgres(Lsn(10));
        let late = Position::Postgres(Lsn(20));
        assert!(early < late);
        assert_eq!(Position::from_storage(&late.to_storage()), Some(late));
        assert_eq!(Position::from_storage("mysql:1"), None);
    }
}
