//! MySQL values to ferry's lossless [`Value`]s and back. Pure functions.
//!
//! Reading, temporal values become [`Value::Native`] with a neutral type name and ISO text:
//! `date` (`2024-02-29`), `timestamp` (`2024-02-29 23:59:59.250000`, no zone), `timestamptz`
//! (a TIMESTAMP read as UTC, `... +00:00`), `time` (a duration, `-838:59:59`), `bit` (`0101`).
//! Zero dates stay zero (`0000-00-00`): a MySQL target stores them back, another engine refuses
//! them with an error naming the row's table. Text decodes from the column's character set
//! (the binary log carries raw bytes); anything not decodable is an error, never a guess.

use ferry_core::{Error, Result, Value};
use mysql_async::Value as Raw;

use super::types::Kind;

fn bad(kind: &Kind, what: impl std::fmt::Display) -> Error {
    Error::definite(
        "source.bad_value",
        format!("a {kind:?} value could not be read: {what}"),
    )
}

fn integer(kind: &Kind, raw: &Raw) -> Option<i128> {
    match raw {
        Raw::Int(value) => Some(i128::from(*value)),
        Raw::UInt(value) => Some(i128::from(*value)),
        Raw::Bytes(text) => std::str::from_utf8(text).ok()?.trim().parse().ok(),
        Raw::Double(value) if matches!(kind, Kind::Year) => Some(*value as i128),
        _ => None,
    }
}

/// Decodes one value. `from_log` marks values from the binary log, which differ from query
/// results in a few encodings (ENUM as index, SET as bitmap, TIMESTAMP as epoch seconds, raw
/// character-set bytes, unsigned integers as signed).
pub(super) fn decode(kind: &Kind, raw: Raw, from_log: bool) -> Result<Value> {
    if matches!(raw, Raw::NULL) {
        return Ok(Value::Null);
    }
    Ok(match kind {
        Kind::Integer { bits, unsigned } => {
            let mut number = integer(kind, &raw).ok_or_else(|| bad(kind, format!("{raw:?}")))?;
            // The binary log carries the column's bytes, and the decoder does not know the
            // column's sign: an unsigned column can arrive negative (two's complement of the
            // full width) and a signed MEDIUMINT arrives zero-extended from 24 bits.
            if *unsigned && number < 0 {
                number += 1i128 << bits;
            } else if !*unsigned && number >= 1i128 << (bits - 1) && number < 1i128 << bits {
                number -= 1i128 << bits;
            }
            let (low, high) = if *unsigned {
                (0, (1i128 << bits) - 1)
            } else {
                (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
            };
            if number < low || number > high {
                return Err(bad(kind, format!("{number} is outside the column's range")));
            }
            match (bits, unsigned) {
                (8, _) | (16, false) => Value::Int16(number as i16),
                (16, true) | (24, _) | (32, false) => Value::Int32(number as i32),
                (32, true) | (64, false) => Value::Int64(number as i64),
                _ => Value::UInt64(number as u64),
            }
        }
        Kind::Float => match raw {
            Raw::Float(value) => Value::Float32(value),
            Raw::Double(value) => Value::Float32(value as f32),
            Raw::Bytes(text) => Value::Float32(parse_text(kind, &text)?),
            other => return Err(bad(kind, format!("{other:?}"))),
        },
        Kind::Double => match raw {
            Raw::Double(value) => Value::Float64(value),
            Raw::Float(value) => Value::Float64(f64::from(value)),
            Raw::Bytes(text) => Value::Float64(parse_text(kind, &text)?),
            other => return Err(bad(kind, format!("{other:?}"))),
        },
        Kind::Decimal => Value::Numeric(text(kind, raw)?),
        Kind::Text { charset } => match raw {
            Raw::Bytes(bytes) if from_log => Value::Text(decode_charset(charset, bytes)?),
            other => Value::Text(text(kind, other)?),
        },
        Kind::Binary { fixed } => match raw {
            Raw::Bytes(mut bytes) => {
                if let Some(length) = fixed {
                    if bytes.len() < *length {
                        bytes.resize(*length, 0);
                    }
                }
                Value::Bytes(bytes)
            }
            other => return Err(bad(kind, format!("{other:?}"))),
        },
        // A value that is not a geometry (an empty one written in non-strict mode) or whose
        // SRID PostGIS would change stays as the server's bytes: a MySQL target takes them
        // back as they are, a PostgreSQL target refuses them loudly.
        Kind::Spatial => match raw {
            Raw::Bytes(bytes) => match ferry_core::spatial::ewkb_hex_from_mysql(&bytes) {
                Ok(text) => Value::Native {
                    type_name: ferry_core::spatial::TYPE_NAME.into(),
                    text,
                },
                Err(_) => Value::Bytes(bytes),
            },
            other => return Err(bad(kind, format!("{other:?}"))),
        },
        Kind::Bit { width } => {
            let bytes = match raw {
                Raw::Bytes(bytes) => bytes,
                Raw::Int(value) => value.to_be_bytes().to_vec(),
                Raw::UInt(value) => value.to_be_bytes().to_vec(),
                other => return Err(bad(kind, format!("{other:?}"))),
            };
            let mut bits = String::with_capacity(bytes.len() * 8);
            for byte in &bytes {
                bits.push_str(&format!("{byte:08b}"));
            }
            let start = bits.len().saturating_sub(*width as usize);
            Value::Native {
                type_name: "bit".into(),
                text: format!("{:0>width$}", &bits[start..], width = *width as usize),
            }
        }
        Kind::Enum { labels } => match raw {
            Raw::Int(_) | Raw::UInt(_) if from_log => {
                let index = integer(kind, &raw).unwrap_or(0);
                if index == 0 {
                    Value::Text(String::new())
                } else {
                    Value::Text(
                        labels
                            .get(index as usize - 1)
                            .cloned()
                            .ok_or_else(|| bad(kind, format!("enum index {index}")))?,
                    )
                }
            }
            other => Value::Text(text(kind, other)?),
        },
        Kind::Set { labels } => match raw {
            Raw::Bytes(bitmap) if from_log => {
                let mut chosen = Vec::new();
                for (index, label) in labels.iter().enumerate() {
                    if bitmap
                        .get(index / 8)
                        .is_some_and(|byte| byte & (1 << (index % 8)) != 0)
                    {
                        chosen.push(label.as_str());
                    }
                }
                Value::Text(chosen.join(","))
            }
            other => Value::Text(text(kind, other)?),
        },
        Kind::Date => match raw {
            Raw::Date(year, month, day, ..) => {
                native("date", format!("{year:04}-{month:02}-{day:02}"))
            }
            other => native("date", text(kind, other)?),
        },
        Kind::DateTime => match raw {
            Raw::Date(year, month, day, hour, minute, second, micros) => native(
                "timestamp",
                datetime(year, month, day, hour, minute, second, micros),
            ),
            other => native("timestamp", text(kind, other)?),
        },
        Kind::Timestamp => {
            let civil = match raw {
                Raw::Date(year, month, day, hour, minute, second, micros) => {
                    datetime(year, month, day, hour, minute, second, micros)
                }
                Raw::Bytes(bytes) if from_log => {
                    epoch_to_civil(&String::from_utf8_lossy(&bytes))
                        .ok_or_else(|| bad(kind, String::from_utf8_lossy(&bytes)))?
                }
                other => text(kind, other)?,
            };
            if civil.starts_with("0000-00-00") {
                native("timestamptz", civil)
            } else {
                native("timestamptz", format!("{civil}+00:00"))
            }
        }
        Kind::Time => match raw {
            Raw::Time(negative, days, hours, minutes, seconds, micros) => {
                let hours = u64::from(days) * 24 + u64::from(hours);
                let mut text = format!(
                    "{}{hours:02}:{minutes:02}:{seconds:02}",
                    if negative { "-" } else { "" }
                );
                if micros != 0 {
                    text.push_str(&format!(".{micros:06}"));
                }
                native("time", text)
            }
            other => native("time", text(kind, other)?),
        },
        Kind::Year => {
            let year = integer(kind, &raw).ok_or_else(|| bad(kind, format!("{raw:?}")))?;
            // The binary log spells the zero year as 1900 (YEAR holds 1901 to 2155, or 0).
            Value::Int16(if from_log && year == 1900 {
                0
            } else {
                year as i16
            })
        }
        Kind::Json => Value::Json(text(kind, raw)?),
        Kind::Unsupported(name) => {
            return Err(Error::definite(
                "source.unsupported_type",
                format!("values of type {name} cannot be moved"),
            ))
        }
    })
}

fn native(type_name: &str, text: String) -> Value {
    Value::Native {
        type_name: type_name.into(),
        text,
    }
}

fn text(kind: &Kind, raw: Raw) -> Result<String> {
    match raw {
        Raw::Bytes(bytes) => String::from_utf8(bytes).map_err(|_| bad(kind, "not UTF-8")),
        Raw::Int(value) => Ok(value.to_string()),
        Raw::UInt(value) => Ok(value.to_string()),
        other => Err(bad(kind, format!("{other:?}"))),
    }
}

fn parse_text<T: std::str::FromStr>(kind: &Kind, bytes: &[u8]) -> Result<T> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| bad(kind, String::from_utf8_lossy(bytes)))
}

fn datetime(
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
) -> String {
    let mut text = format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}");
    if micros != 0 {
        text.push_str(&format!(".{micros:06}"));
    }
    text
}

/// `SECONDS[.MICROS]` since 1970 (UTC) as `YYYY-MM-DD HH:MM:SS[.ffffff]`; 0 is the zero value.
fn epoch_to_civil(text: &str) -> Option<String> {
    let (seconds, micros) = match text.split_once('.') {
        Some((seconds, fraction)) if fraction.len() <= 6 => (
            seconds.parse::<i64>().ok()?,
            format!("{fraction:0<6}").parse::<u32>().ok()?,
        ),
        Some(_) => return None,
        None => (text.parse::<i64>().ok()?, 0),
    };
    if seconds == 0 && micros == 0 {
        return Some("0000-00-00 00:00:00".into());
    }
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    let (year, month, day) = ferry_core::calendar::civil_from_days(days);
    Some(datetime(
        year as u16,
        month as u8,
        day as u8,
        (rest / 3600) as u8,
        (rest % 3600 / 60) as u8,
        (rest % 60) as u8,
        micros,
    ))
}

/// Whether text in this character set can be read from the binary log (see
/// [`decode_charset`]).
pub(super) fn readable_charset(charset: &str) -> bool {
    matches!(charset, "utf8mb4" | "utf8mb3" | "utf8" | "ascii" | "latin1")
}

/// A text column of `table` whose character set the binary log cannot be read in, if any, as
/// (column, character set).
pub(super) fn unreadable_column(table: &ferry_core::TableSchema) -> Option<(String, String)> {
    table
        .columns
        .iter()
        .find_map(|column| match super::catalog::kind_of(column) {
            Kind::Text { charset } if !readable_charset(&charset) => {
                Some((column.name.clone(), charset))
            }
            _ => None,
        })
}

/// Decodes raw bytes of a character set into UTF-8 text.
pub(super) fn decode_charset(charset: &str, bytes: Vec<u8>) -> Result<String> {
    match charset {
        "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => String::from_utf8(bytes).map_err(|_| {
            Error::definite(
                "source.bad_value",
                format!("a {charset} text in the binary log is not valid UTF-8"),
            )
        }),
        // MySQL's latin1 is Windows-1252, with the five undefined bytes kept as C1 controls.
        "latin1" => Ok(bytes.iter().map(|byte| cp1252(*byte)).collect()),
        other => Err(Error::operator(
            "source.unsupported_charset",
            format!("columns in character set {other} cannot be read from the binary log yet"),
        )
        .with_hint("convert the column to utf8mb4 (ALTER TABLE ... CONVERT TO CHARACTER SET utf8mb4) or leave the table out")),
    }
}

fn cp1252(byte: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match byte {
        0x80..=0x9F => {
            char::from_u32(u32::from(HIGH[usize::from(byte - 0x80)])).unwrap_or('\u{FFFD}')
        }
        other => char::from(other),
    }
}

/// A value in the form a MySQL target takes it, before it is written as a SQL literal or as a
/// `LOAD DATA` field: every check that a value fits the target is made here, once.
#[derive(Debug, PartialEq)]
pub(crate) enum Plain<'a> {
    Null,
    /// A number in decimal notation, written as it is.
    Number(String),
    /// Character data.
    Text(&'a str),
    /// Bytes for a binary column.
    Bytes(std::borrow::Cow<'a, [u8]>),
    /// A BIT value as a string of `0` and `1` (empty for no bits).
    Bits(String),
}

/// `value` in the form a column of kind `target` takes it, or why it cannot hold it.
pub(crate) fn plain<'a>(value: &'a Value, target: &Kind) -> Result<Plain<'a>> {
    let unrepresentable = |what: &str| {
        Error::definite(
            "target.unrepresentable_value",
            format!("the MySQL target cannot store {what}"),
        )
        .with_hint(
            "change the value on the source, or map the column to another type; see docs/mysql.md",
        )
    };
    Ok(match value {
        Value::Null => Plain::Null,
        Value::Bool(flag) => Plain::Number(if *flag { "1" } else { "0" }.into()),
        Value::Int16(number) => Plain::Number(number.to_string()),
        Value::Int32(number) => Plain::Number(number.to_string()),
        Value::Int64(number) => Plain::Number(number.to_string()),
        Value::UInt64(number) => Plain::Number(number.to_string()),
        Value::Float32(number) if number.is_finite() => Plain::Number(format!("{number:?}")),
        Value::Float64(number) if number.is_finite() => Plain::Number(format!("{number:?}")),
        Value::Float32(_) | Value::Float64(_) => {
            return Err(unrepresentable("NaN or infinite floats"))
        }
        Value::Numeric(text) => {
            if text
                .chars()
                .any(|character| character.is_ascii_alphabetic())
            {
                return Err(unrepresentable(&format!("the numeric value {text}")));
            }
            Plain::Number(text.clone())
        }
        Value::Text(_) | Value::Json(_) | Value::Uuid(_) if matches!(target, Kind::Bit { .. }) => {
            return Err(unrepresentable("text in a BIT column"))
        }
        Value::Text(text) | Value::Json(text) | Value::Uuid(text) => Plain::Text(text),
        Value::Bytes(bytes) => match target {
            Kind::Bit { .. } => {
                Plain::Bits(bytes.iter().map(|byte| format!("{byte:08b}")).collect())
            }
            Kind::Binary { .. } | Kind::Spatial => Plain::Bytes(bytes.into()),
            _ => {
                return Err(unrepresentable(
                    "bytes in a column that is not binary (bytes have no character set)",
                ))
            }
        },
        // A geometry as hex EWKB (ferry's own spatial values, and PostGIS's text: a PostgreSQL
        // source names its types by number) into a spatial column, or ferry's geometry into a
        // binary one (a target created by hand as LONGBLOB): MySQL's own form.
        Value::Native { type_name, text }
            if matches!(target, Kind::Spatial)
                || (type_name == ferry_core::spatial::TYPE_NAME
                    && matches!(target, Kind::Binary { .. })) =>
        {
            Plain::Bytes(
                ferry_core::spatial::mysql_from_ewkb_hex(text)
                    .map_err(|problem| unrepresentable(&problem))?
                    .into(),
            )
        }
        Value::Native { type_name, .. } if type_name == ferry_core::spatial::TYPE_NAME => {
            return Err(unrepresentable(
                "a geometry in a column that is not spatial",
            ))
        }
        Value::Native { text, .. } => match target {
            Kind::Bit { .. } => Plain::Bits(text.clone()),
            Kind::DateTime | Kind::Timestamp | Kind::Date => {
                let local = text
                    .strip_suffix("+00:00")
                    .or_else(|| text.strip_suffix("+00"))
                    .unwrap_or(text);
                if local.contains('+') || local.ends_with("BC") || local.contains("infinity") {
                    return Err(unrepresentable(&format!("the time {text}")));
                }
                Plain::Text(local)
            }
            _ => Plain::Text(text),
        },
    })
}

/// The SQL literal for `value` in a column of kind `target` (strings under NO_BACKSLASH_ESCAPES).
pub(super) fn literal(value: &Value, target: &Kind) -> Result<String> {
    Ok(match plain(value, target)? {
        Plain::Null => "NULL".into(),
        Plain::Number(number) => number,
        Plain::Text(text) => string(text),
        Plain::Bytes(bytes) => hex(&bytes),
        Plain::Bits(bits) => bits_literal(&bits),
    })
}

fn string(text: &str) -> String {
    format!("_utf8mb4'{}'", text.replace('\'', "''"))
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(3 + bytes.len() * 2);
    text.push_str("X'");
    for byte in bytes {
        text.push_str(&format!("{byte:02X}"));
    }
    text.push('\'');
    text
}

fn bits_literal(bits: &str) -> String {
    if bits.is_empty() {
        "b'0'".into()
    } else {
        format!("b'{bits}'")
    }
}

/// A ferry value as a statement parameter (for key bounds and key lookups).
pub(super) fn param(value: &Value) -> Raw {
    match value {
        Value::Null => Raw::NULL,
        Value::Bool(flag) => Raw::Int(i64::from(*flag)),
        Value::Int16(number) => Raw::Int(i64::from(*number)),
        Value::Int32(number) => Raw::Int(i64::from(*number)),
        Value::Int64(number) => Raw::Int(*number),
        Value::UInt64(number) => Raw::UInt(*number),
        Value::Float32(number) => Raw::Float(*number),
        Value::Float64(number) => Raw::Double(*number),
        Value::Numeric(text) | Value::Text(text) | Value::Json(text) | Value::Uuid(text) => {
            Raw::Bytes(text.as_bytes().to_vec())
        }
        Value::Bytes(bytes) => Raw::Bytes(bytes.clone()),
        Value::Native { type_name, text } if type_name == "bit" => {
            Raw::UInt(u64::from_str_radix(text, 2).unwrap_or(0))
        }
        Value::Native { type_name, text } if type_name == ferry_core::spatial::TYPE_NAME => {
            // (Text that is not EWKB stays text, so a lookup cannot match another value.)
            Raw::Bytes(
                ferry_core::spatial::mysql_from_ewkb_hex(text)
                    .unwrap_or_else(|_| text.as_bytes().to_vec()),
            )
        }
        Value::Native { text, .. } => Raw::Bytes(
            text.strip_suffix("+00:00")
                .unwrap_or(text)
                .as_bytes()
                .to_vec(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometries_travel_as_ewkb_and_come_back_byte_for_byte() {
        // POINT(1 2) with SRID 4326 as MariaDB stores it.
        let mut stored = 4326u32.to_le_bytes().to_vec();
        stored.push(1);
        stored.extend_from_slice(&1u32.to_le_bytes());
        stored.extend_from_slice(&1.0f64.to_le_bytes());
        stored.extend_from_slice(&2.0f64.to_le_bytes());
        let value = decode(&Kind::Spatial, Raw::Bytes(stored.clone()), true).unwrap();
        assert_eq!(
            value,
            Value::Native {
                type_name: "geometry".into(),
                text: "0101000020E6100000000000000000F03F0000000000000040".into()
            }
        );
        let expected = format!(
            "X'{}'",
            stored
                .iter()
                .map(|byte| format!("{byte:02X}"))
                .collect::<String>()
        );
        assert_eq!(literal(&value, &Kind::Spatial).unwrap(), expected);
        // The same geometry read from PostGIS by a PostgreSQL source (its type named by number).
        let from_postgres = Value::Native {
            type_name: "pg_type:16391".into(),
            text: "0101000020e6100000000000000000f03f0000000000000040".into(),
        };
        assert_eq!(literal(&from_postgres, &Kind::Spatial).unwrap(), expected);
        let three_d = Value::Native {
            type_name: "pg_type:16391".into(),
            text: "0101000080000000000000F03F00000000000000400000000000000840".into(),
        };
        assert!(literal(&three_d, &Kind::Spatial).is_err());
        assert!(literal(&value, &Kind::Json).is_err());
        assert_eq!(
            literal(&value, &Kind::Binary { fixed: None }).unwrap(),
            expected
        );
        // Not a geometry (MariaDB's empty value in non-strict mode): kept as bytes.
        assert_eq!(
            decode(&Kind::Spatial, Raw::Bytes(Vec::new()), true).unwrap(),
            Value::Bytes(Vec::new())
        );
        assert_eq!(
            literal(&Value::Bytes(Vec::new()), &Kind::Spatial).unwrap(),
            "X''"
        );
    }

    #[test]
    fn unsigned_and_special_encodings_decode_exactly() {
        let unsigned = Kind::Integer {
            bits: 64,
            unsigned: true,
        };
        assert_eq!(
            decode(&unsigned, Raw::Int(-1), true).unwrap(),
            Value::UInt64(u64::MAX)
        );
        let tiny = Kind::Integer {
            bits: 8,
            unsigned: true,
        };
        assert_eq!(
            decode(&tiny, Raw::Int(-1), true).unwrap(),
            Value::Int16(255)
        );
        // The binary log zero-extends a signed MEDIUMINT from 24 bits.
        let medium = Kind::Integer {
            bits: 24,
            unsigned: false,
        };
        for (raw, expected) in [
            (16_777_211, -5),
            (8_388_608, -8_388_608),
            (8_388_607, 8_388_607),
            (-7, -7),
        ] {
            assert_eq!(
                decode(&medium, Raw::Int(raw), true).unwrap(),
                Value::Int32(expected)
            );
        }
        assert!(decode(&medium, Raw::Int(1 << 24), true).is_err());
        let medium_unsigned = Kind::Integer {
            bits: 24,
            unsigned: true,
        };
        assert_eq!(
            decode(&medium_unsigned, Raw::Int(16_777_215), true).unwrap(),
            Value::Int32(16_777_215)
        );
        let set = Kind::Set {
            labels: vec!["a".into(), "b".into(), "c".into()],
        };
        assert_eq!(
            decode(&set, Raw::Bytes(vec![0b101]), true).unwrap(),
            Value::Text("a,c".into())
        );
        let enumeration = Kind::Enum {
            labels: vec!["x".into(), "y".into()],
        };
        assert_eq!(
            decode(&enumeration, Raw::Int(2), true).unwrap(),
            Value::Text("y".into())
        );
        assert_eq!(
            decode(&Kind::Timestamp, Raw::Bytes(b"951782400.5".to_vec()), true).unwrap(),
            native("timestamptz", "2000-02-29 00:00:00.500000+00:00".into())
        );
        assert_eq!(
            decode(&Kind::Time, Raw::Time(true, 34, 22, 59, 59, 0), false).unwrap(),
            native("time", "-838:59:59".into())
        );
        assert_eq!(
            decode(
                &Kind::Bit { width: 10 },
                Raw::Bytes(vec![0x02, 0x05]),
                false
            )
            .unwrap(),
            native("bit", "1000000101".into())
        );
        assert_eq!(
            decode(&Kind::Binary { fixed: Some(3) }, Raw::Bytes(vec![1]), true).unwrap(),
            Value::Bytes(vec![1, 0, 0])
        );
        assert_eq!(
            decode(
                &Kind::Text {
                    charset: "latin1".into()
                },
                Raw::Bytes(vec![0x80, 0xE9]),
                true
            )
            .unwrap(),
            Value::Text("€é".into())
        );
        assert_eq!(
            decode(&Kind::Year, Raw::Bytes(b"1900".to_vec()), true).unwrap(),
            Value::Int16(0)
        );
    }

    #[test]
    fn literals_quote_and_refuse() {
        let text = Kind::Text {
            charset: "utf8mb4".into(),
        };
        assert_eq!(
            literal(&Value::Text("it's \\".into()), &text).unwrap(),
            "_utf8mb4'it''s \\'"
        );
        assert_eq!(
            literal(&Value::Bytes(vec![0, 255]), &Kind::Binary { fixed: None }).unwrap(),
            "X'00FF'"
        );
        assert!(literal(&Value::Numeric("NaN".into()), &Kind::Decimal).is_err());
        assert_eq!(
            literal(
                &native("pg_type:1184", "2024-01-02 03:04:05.5+00".into()),
                &Kind::DateTime
            )
            .unwrap(),
            "_utf8mb4'2024-01-02 03:04:05.5'"
        );
        assert!(literal(&native("pg_type:1184", "infinity".into()), &Kind::DateTime).is_err());
        assert_eq!(literal(&Value::Float64(0.1), &Kind::Double).unwrap(), "0.1");
    }
}
