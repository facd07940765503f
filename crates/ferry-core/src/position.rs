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

/// A MariaDB global transaction id: replication domain, originating server, sequence number.
/// It names the same transaction on every server of a replication topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub sequence: u64,
}

impl Gtid {
    /// Parses `DOMAIN-SERVER-SEQUENCE`.
    pub fn parse(text: &str) -> Option<Gtid> {
        let mut parts = text.trim().split('-');
        let gtid = Gtid {
            domain: parts.next()?.parse().ok()?,
            server: parts.next()?.parse().ok()?,
            sequence: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(gtid)
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}-{}-{}",
            self.domain, self.server, self.sequence
        )
    }
}

/// A place in a MySQL or MariaDB binary log: the number of the log file (the digits after the
/// base name, `binlog.000042` is 42) and a byte offset within it, valid on the server `server`
/// (its `server_id`; 0 when unknown). On MariaDB with one replication domain it also carries
/// the GTID of the last transaction at or before it, which stays valid on another server of
/// the topology (after a failover).
///
/// Positions of one server order by file, then offset. A file and offset mean nothing on another
/// server: positions of two servers order by their GTIDs (same domain), else not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BinlogPosition {
    pub file: u32,
    pub offset: u64,
    pub server: u32,
    pub gtid: Option<Gtid>,
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        let same_server = self.server == other.server || self.server == 0 || other.server == 0;
        if same_server {
            return Some(
                (self.file, self.offset)
                    .cmp(&(other.file, other.offset))
                    .then(
                        self.gtid
                            .map(|gtid| gtid.sequence)
                            .cmp(&other.gtid.map(|gtid| gtid.sequence)),
                    ),
            );
        }
        match (self.gtid, other.gtid) {
            (Some(this), Some(that)) if this.domain == that.domain => {
                Some(this.sequence.cmp(&that.sequence))
            }
            _ => None,
        }
    }
}

impl BinlogPosition {
    /// Parses the `FILE/OFFSET[@SERVER][#GTID]` text form.
    pub fn parse(text: &str) -> Option<BinlogPosition> {
        let (text, gtid) = match text.trim().split_once('#') {
            Some((text, gtid)) => (text, Some(Gtid::parse(gtid)?)),
            None => (text.trim(), None),
        };
        let (text, server) = match text.split_once('@') {
            Some((text, server)) => (text, server.parse().ok()?),
            None => (text, 0),
        };
        let (file, offset) = text.split_once('/')?;
        Some(BinlogPosition {
            file: file.parse().ok()?,
            offset: offset.parse().ok()?,
            server,
            gtid,
        })
    }

    /// The file number of a binary log file name (`binlog.000042` is 42).
    pub fn file_number(file_name: &str) -> Option<u32> {
        file_name.rsplit_once('.')?.1.parse().ok()
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.file, self.offset)?;
        if self.server != 0 {
            write!(formatter, "@{}", self.server)?;
        }
        if let Some(gtid) = self.gtid {
            write!(formatter, "#{gtid}")?;
        }
        Ok(())
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
            (Position::Mysql(left), Position::Mysql(right)) => left.partial_cmp(right),
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
            // Offsets of two servers cannot be subtracted.
            (Position::Mysql(this), Position::Mysql(that))
                if this.server != that.server && this.server != 0 && that.server != 0 =>
            {
                0
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

    /// True for two MySQL positions of different known servers that order as equal (the same
    /// GTID): the same point of the stream, named on another server.
    pub fn same_point_elsewhere(&self, other: &Position) -> bool {
        matches!((self, other), (Position::Mysql(this), Position::Mysql(that))
            if this.server != that.server && this.server != 0 && that.server != 0)
    }

    /// A stable text form for storage: `postgres:X/Y`, `mysql:FILE/OFFSET[@SERVER][#GTID]`.
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
            ..BinlogPosition::default()
        });
        assert_eq!(Position::from_storage(&binlog.to_storage()), Some(binlog));
        assert_eq!(binlog.to_storage(), "mysql:3/1234");
        let with_gtid = Position::Mysql(BinlogPosition {
            file: 3,
            offset: 1234,
            server: 7,
            gtid: Gtid::parse("0-7-42"),
        });
        assert_eq!(with_gtid.to_storage(), "mysql:3/1234@7#0-7-42");
        assert_eq!(
            Position::from_storage(&with_gtid.to_storage()),
            Some(with_gtid)
        );
        assert_eq!(Position::from_storage("mysql:3/1234#0-7"), None);
        // After a failover, the replica's positions order by GTID, not by file and offset.
        let primary = Position::from_storage("mysql:12/9000@7#0-7-42").unwrap();
        let replica = Position::from_storage("mysql:3/500@8#0-7-43").unwrap();
        assert!(replica > primary);
        assert_eq!(replica.distance_from(primary), 0);
        let same_transaction = Position::from_storage("mysql:3/100@8#0-7-42").unwrap();
        assert_eq!(
            same_transaction.partial_cmp(&primary),
            Some(std::cmp::Ordering::Equal)
        );
        assert!(same_transaction.same_point_elsewhere(&primary));
        assert!(!primary.same_point_elsewhere(&primary));
        let other_domain = Position::from_storage("mysql:3/500@8#1-8-1").unwrap();
        assert_eq!(other_domain.partial_cmp(&primary), None);
        assert_eq!(binlog.partial_cmp(&late), None);
        let next_file = Position::Mysql(BinlogPosition {
            file: 4,
            offset: 10,
            ..BinlogPosition::default()
        });
        assert!(binlog < next_file);
        assert_eq!(next_file.distance_from(binlog), 10);
        assert_eq!(BinlogPosition::file_number("binlog.000042"), Some(42));
    }
}
