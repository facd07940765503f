//! Typed source positions. A position is comparable within its kind and never a string.

use std::collections::BTreeMap;
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// PostgreSQL: the end LSN of the last transaction applied.
    Postgres(Lsn),
    /// MySQL and MariaDB: the binary log position after the last transaction applied.
    Mysql(BinlogPosition),
    /// Any other source: a position its connector defines ([`Marks`]), so that adding a kind
    /// of source needs no change here.
    Marks(Marks),
}

/// A position a connector defines for itself: named counters that only move forward (each
/// partition of a Kafka topic and its next offset; a MongoDB change stream's cluster time) and,
/// where the source resumes from something else, an opaque token (a MongoDB resume token).
///
/// Two positions of one kind order counter by counter (a counter a position lacks counts as
/// zero): one is later when none of its counters is behind; when some are ahead and others
/// behind, or all are equal but the tokens differ, they do not order (`partial_cmp` is
/// `None`), as for positions of different kinds. A connector moves a counter forward at every
/// commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Marks {
    /// The connector that made it (`kafka`, `mongodb`).
    pub kind: String,
    /// Named counters.
    pub counters: BTreeMap<String, u64>,
    /// What the source needs to resume here, stored and handed back unread.
    pub token: Option<String>,
}

impl Marks {
    fn partial_cmp(&self, other: &Marks) -> Option<std::cmp::Ordering> {
        use std::cmp::Ordering;
        if self.kind != other.kind {
            return None;
        }
        let (mut ahead, mut behind) = (false, false);
        let names = self.counters.keys().chain(other.counters.keys());
        for name in names {
            let this = self.counters.get(name).copied().unwrap_or(0);
            let that = other.counters.get(name).copied().unwrap_or(0);
            ahead |= this > that;
            behind |= this < that;
        }
        match (ahead, behind) {
            // The same counters with another token: the connector did not move a counter, so
            // the two cannot be placed (a connector moves one forward at every commit).
            (false, false) if self.token != other.token => None,
            (false, false) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (true, true) => None,
        }
    }

    /// How far the counters are ahead of `earlier`'s, summed (records, for Kafka offsets).
    fn distance_from(&self, earlier: &Marks) -> u64 {
        if self.kind != earlier.kind {
            return 0;
        }
        self.counters
            .iter()
            .map(|(name, this)| {
                this.saturating_sub(earlier.counters.get(name).copied().unwrap_or(0))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// `KIND:NAME=N,NAME=N[#TOKEN]`, with `%`, `:`, `,`, `=` and `#` in the kind, the names
    /// and the token written as `%XX`.
    fn to_text(&self) -> String {
        let counters: Vec<String> = self
            .counters
            .iter()
            .map(|(name, value)| format!("{}={value}", escape(name)))
            .collect();
        let mut text = format!("{}:{}", escape(&self.kind), counters.join(","));
        if let Some(token) = &self.token {
            text.push('#');
            text.push_str(&escape(token));
        }
        text
    }

    /// Parses [`Marks::to_text`].
    fn parse(text: &str) -> Option<Marks> {
        let (body, token) = match text.split_once('#') {
            Some((body, token)) => (body, Some(unescape(token)?)),
            None => (text, None),
        };
        let (kind, counters) = body.split_once(':')?;
        let mut parsed = BTreeMap::new();
        for counter in counters.split(',').filter(|counter| !counter.is_empty()) {
            let (name, value) = counter.split_once('=')?;
            parsed.insert(unescape(name)?, value.parse().ok()?);
        }
        Some(Marks {
            kind: unescape(kind)?,
            counters: parsed,
            token,
        })
    }
}

fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '%' | ':' | ',' | '=' | '#' => escaped.push_str(&format!("%{:02X}", character as u32)),
            other => escaped.push(other),
        }
    }
    escaped
}

fn unescape(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Position::Postgres(left), Position::Postgres(right)) => Some(left.cmp(right)),
            (Position::Mysql(left), Position::Mysql(right)) => left.partial_cmp(right),
            (Position::Marks(left), Position::Marks(right)) => left.partial_cmp(right),
            _ => None,
        }
    }
}

impl Position {
    /// How far this position is ahead of `earlier` in the source's units (bytes of WAL for
    /// PostgreSQL, bytes of binary log for MySQL, where a later file counts only its own offset
    /// because the sizes of the files between are unknown); zero when it is not ahead.
    pub fn distance_from(&self, earlier: &Position) -> u64 {
        match (self, earlier) {
            (Position::Postgres(Lsn(this)), Position::Postgres(Lsn(that))) => {
                this.saturating_sub(*that)
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
            (Position::Marks(this), Position::Marks(that)) => this.distance_from(that),
            _ => 0,
        }
    }

    /// True for two MySQL positions of different known servers that order as equal (the same
    /// GTID): the same point of the stream, named on another server.
    pub fn same_point_elsewhere(&self, other: &Position) -> bool {
        matches!((self, other), (Position::Mysql(this), Position::Mysql(that))
            if this.server != that.server && this.server != 0 && that.server != 0)
    }

    /// A stable text form for storage: `postgres:X/Y`, `mysql:FILE/OFFSET[@SERVER][#GTID]`,
    /// `marks:KIND:NAME=N,...[#TOKEN]`.
    pub fn to_storage(&self) -> String {
        match self {
            Position::Postgres(lsn) => format!("postgres:{lsn}"),
            Position::Mysql(binlog) => format!("mysql:{binlog}"),
            Position::Marks(marks) => format!("marks:{}", marks.to_text()),
        }
    }

    /// The error for a stored position that another kind of source wrote, for a source whose
    /// positions are `kind` (the target holds another migration's state under this name).
    pub fn from_another_source(&self, kind: &str) -> crate::Error {
        crate::Error::operator(
            "state.position",
            format!("the checkpoint {self} is not a {kind}"),
        )
        .with_hint("the target holds the state of a migration from another kind of source: use another --name or `ferry run --restart`")
    }

    /// Parses [`Position::to_storage`] output.
    pub fn from_storage(text: &str) -> Option<Position> {
        let (kind, rest) = text.split_once(':')?;
        match kind {
            "postgres" => Lsn::parse(rest).map(Position::Postgres),
            "mysql" => BinlogPosition::parse(rest).map(Position::Mysql),
            "marks" => Marks::parse(rest).map(Position::Marks),
            _ => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Postgres(lsn) => write!(formatter, "{lsn}"),
            Position::Mysql(binlog) => write!(formatter, "{binlog}"),
            Position::Marks(marks) => write!(formatter, "{}", marks.to_text()),
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
    fn connector_defined_positions_order_by_counters_and_store_exactly() {
        let offsets = |pairs: &[(&str, u64)], token: Option<&str>| {
            Position::Marks(Marks {
                kind: "kafka".into(),
                counters: pairs
                    .iter()
                    .map(|(name, value)| (name.to_string(), *value))
                    .collect(),
                token: token.map(str::to_string),
            })
        };
        let early = offsets(&[("orders/0", 10), ("orders/1", 5)], None);
        let late = offsets(&[("orders/0", 12), ("orders/1", 5)], None);
        let crossed = offsets(&[("orders/0", 9), ("orders/1", 6)], None);
        assert!(early < late);
        assert_eq!(late.distance_from(&early), 2);
        assert_eq!(early.distance_from(&late), 0);
        assert_eq!(
            early.partial_cmp(&crossed),
            None,
            "one partition ahead, one behind"
        );
        // A partition a position does not name yet counts as offset zero.
        let more = offsets(&[("orders/0", 10), ("orders/1", 5), ("orders/2", 1)], None);
        assert!(more > early);
        assert_eq!(
            early.partial_cmp(&offsets(
                &[("orders/0", 10), ("orders/1", 5), ("orders/2", 0)],
                None
            )),
            Some(std::cmp::Ordering::Equal)
        );
        // Kinds never compare, with each other or with database positions.
        let mut other_kind = late.clone();
        if let Position::Marks(marks) = &mut other_kind {
            marks.kind = "mongodb".into();
        }
        assert_eq!(other_kind.partial_cmp(&early), None);
        assert_eq!(early.partial_cmp(&Position::Postgres(Lsn(1))), None);
        // Equal counters with different tokens do not order.
        assert_eq!(
            offsets(&[("orders/0", 10)], Some("a"))
                .partial_cmp(&offsets(&[("orders/0", 10)], Some("b"))),
            None
        );
        // Names and tokens with the separators in them store and come back exactly.
        let odd = offsets(
            &[("a:b,c=d#e%f/0", u64::MAX), ("ü", 0)],
            Some("82656F:1#%=,x"),
        );
        let stored = odd.to_storage();
        assert_eq!(
            Position::from_storage(&stored),
            Some(odd.clone()),
            "{stored}"
        );
        assert_eq!(
            Position::from_storage(&early.to_storage()),
            Some(early.clone())
        );
        assert_eq!(early.to_storage(), "marks:kafka:orders/0=10,orders/1=5");
        assert_eq!(Position::from_storage("marks:kafka:x=notanumber"), None);
        assert_eq!(Position::from_storage("marks:kafka:x=1#%4"), None);
    }

    #[test]
    fn positions_order_and_store() {
        let early = Position::Postgres(Lsn(10));
        let late = Position::Postgres(Lsn(20));
        assert!(early < late);
        assert_eq!(
            Position::from_storage(&late.to_storage()),
            Some(late.clone())
        );
        assert_eq!(Position::from_storage("mysql:1"), None);
        let binlog = Position::Mysql(BinlogPosition {
            file: 3,
            offset: 1234,
            ..BinlogPosition::default()
        });
        assert_eq!(
            Position::from_storage(&binlog.to_storage()),
            Some(binlog.clone())
        );
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
        assert_eq!(replica.distance_from(&primary), 0);
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
        assert_eq!(next_file.distance_from(&binlog), 10);
        assert_eq!(BinlogPosition::file_number("binlog.000042"), Some(42));
    }
}
