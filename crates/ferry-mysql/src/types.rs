//! MySQL column types as ferry reads them: what a column's `COLUMN_TYPE` means for decoding its
//! values. Pure functions.

pub use ferry_sql::syntax::{labels, modifier};

/// How a column's values are decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Integers: width in bits and signedness.
    Integer {
        bits: u8,
        unsigned: bool,
    },
    Float,
    Double,
    Decimal,
    /// Character data in a character set (`utf8mb4`, `latin1` ...).
    Text {
        charset: String,
    },
    /// Byte strings (BINARY, VARBINARY, BLOB); `fixed` is the length of a BINARY(n), whose
    /// trailing zero bytes the binary log leaves out.
    Binary {
        fixed: Option<usize>,
    },
    /// GEOMETRY and its subtypes: stored as a 4-byte SRID and WKB, carried as hex EWKB.
    Spatial,
    /// BIT(n).
    Bit {
        width: u32,
    },
    Enum {
        labels: Vec<String>,
    },
    Set {
        labels: Vec<String>,
    },
    Date,
    DateTime,
    /// TIMESTAMP: a point in time, read as UTC.
    Timestamp,
    /// TIME: a duration from -838:59:59 to 838:59:59.
    Time,
    Year,
    Json,
    /// A type ferry does not move, with its name.
    Unsupported(String),
}

impl Kind {
    /// The kind of a column from its `DATA_TYPE`, `COLUMN_TYPE` and character set.
    pub fn of(data_type: &str, column_type: &str, charset: Option<&str>) -> Kind {
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        match data_type {
            "tinyint" => Kind::Integer { bits: 8, unsigned },
            "smallint" => Kind::Integer { bits: 16, unsigned },
            "mediumint" => Kind::Integer { bits: 24, unsigned },
            "int" | "integer" => Kind::Integer { bits: 32, unsigned },
            "bigint" => Kind::Integer { bits: 64, unsigned },
            "float" => Kind::Float,
            "double" | "real" => Kind::Double,
            "decimal" | "numeric" => Kind::Decimal,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => match charset {
                Some("binary") | None => Kind::Binary { fixed: None },
                Some(charset) => Kind::Text {
                    charset: charset.to_string(),
                },
            },
            "binary" => Kind::Binary {
                fixed: modifier(column_type).and_then(|inside| inside.parse().ok()),
            },
            "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                Kind::Binary { fixed: None }
            }
            // Spatial values travel as hex EWKB (`ferry_core::spatial`), converted from and to
            // the server's own form (a 4-byte SRID, then WKB) without losing a byte.
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" | "geomcollection" => Kind::Spatial,
            "bit" => Kind::Bit {
                width: modifier(column_type)
                    .and_then(|inside| inside.parse().ok())
                    .unwrap_or(1),
            },
            "enum" => Kind::Enum {
                labels: labels(column_type),
            },
            "set" => Kind::Set {
                labels: labels(column_type),
            },
            "date" => Kind::Date,
            "datetime" => Kind::DateTime,
            "timestamp" => Kind::Timestamp,
            "time" => Kind::Time,
            "year" => Kind::Year,
            "json" => Kind::Json,
            other => Kind::Unsupported(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_column_type() {
        assert_eq!(
            Kind::of("int", "int(10) unsigned", None),
            Kind::Integer {
                bits: 32,
                unsigned: true
            }
        );
        assert_eq!(
            Kind::of("varbinary", "varbinary(8)", None),
            Kind::Binary { fixed: None }
        );
        assert_eq!(
            Kind::of("binary", "binary(4)", None),
            Kind::Binary { fixed: Some(4) }
        );
        assert_eq!(Kind::of("bit", "bit(12)", None), Kind::Bit { width: 12 });
        assert_eq!(
            Kind::of("enum", "enum('a','it''s','x,y')", Some("utf8mb4")),
            Kind::Enum {
                labels: vec!["a".into(), "it's".into(), "x,y".into()]
            }
        );
        assert_eq!(Kind::of("point", "point", None), Kind::Spatial);
        assert!(matches!(
            Kind::of("vector", "vector(3)", None),
            Kind::Unsupported(_)
        ));
        assert_eq!(
            Kind::of("enum", "enum('Active','Closed')", Some("utf8mb4")),
            Kind::Enum {
                labels: vec!["Active".into(), "Closed".into()]
            },
            "labels keep their case"
        );
    }
}
