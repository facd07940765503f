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

/// A place in a MySQL or MariaDB binary log: the number of the log file (the digits after the
/// base name, `binlog.000042` is 42) and a byte offset within it. Ordered by file, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BinlogPosition {
    pub file: u32,
    pub offset: u64,
}

impl BinlogPosition {
    /// Parses the `FILE/OFFSET` text form (both decimal).
    pub fn parse(text: &str) -> Option<BinlogPosition> {
        let (file, offset) = text.trim().split_once('/')?;
        Some(BinlogPosition {
            file: file.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }

    /// The file number of a binary log file name (`binlog.000042` is 42).
    pub fn file_number(file_name: &str) -> Option<u32> {
        file_name.rsplit_once('.')?.1.parse().ok()
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.file, self.offset)
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
    /// MySQL and MariaDB: the binary log position after the last transaction applied.
    Mysql(BinlogPosition),
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Position::Postgres(left), Position::Postgres(right)) => Some(left.cmp(right)),
            (Position::Mysql(left), Position::Mysql(right)) => Some(left.cmp(right)),
            _ => None,
        }
    }
}

impl Position {
    /// How far this position is ahead of `earlier` in the source's units (bytes of WAL for
    /// PostgreSQL, bytes of binary log for MySQL, where a later file counts only its own offset
    /// because the sizes of the files between are unknown); zero when it is not ahead.
    pub fn distance_from(&self, earlier: Position) -> u64 {
        match (self, earlier) {
            (Position::Postgres(Lsn(this)), Position::Postgres(Lsn(that))) => {
                this.saturating_sub(that)
            }
            (Position::Mysql(this), Position::Mysql(that)) => {
                if this.file == that.file {
                    this.offset.saturating_sub(that.offset)
                } else if this.file > that.file {
                    this.offset
                } else {
                    0
                }
            }
            _ => 0,
        }
    }

    /// A stable text form for storage: `postgres:X/Y`, `mysql:FILE/OFFSET`.
    pub fn to_storage(&self) -> String {
        match self {
            Position::Postgres(lsn) => format!("postgres:{lsn}"),
            Position::Mysql(binlog) => format!("mysql:{binlog}"),
        }
    }

    /// Parses [`Position::to_storage`] output.
    pub fn from_storage(text: &str) -> Option<Position> {
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "postgres" => Lsn::parse(rest).map(Position::Postgres),
            "mysql" => BinlogPosition::parse(rest).map(Position::Mysql),
            _ => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Postgres(lsn) => write!(formatter, "{lsn}"),
            Position::Mysql(binlog) => write!(formatter, "{binlog}"),
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
        let binlog = Position::Mysql(BinlogPosition {
            file: 3,
            offset: 1234,
        });
        assert_eq!(Position::from_storage(&binlog.to_storage()), Some(binlog));
        assert_eq!(binlog.partial_cmp(&late), None);
        let next_file = Position::Mysql(BinlogPosition {
            file: 4,
            offset: 10,
        });
        assert!(binlog < next_file);
        assert_eq!(next_file.distance_from(binlog), 10);
        assert_eq!(BinlogPosition::file_number("binlog.000042"), Some(42));
    }
}
