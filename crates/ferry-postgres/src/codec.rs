//! Values to and from PostgreSQL's text format (as pgoutput sends them and as ferry writes them
//! back), under the pinned session settings of `connection.rs`.
//!
//! Decoding never loses anything: a text that does not parse as its type's model (it should
//! always parse) is kept as [`Value::Native`] with its exact text.

use ferry_core::Value;

/// Built-in type OIDs (stable across PostgreSQL versions).
mod oid {
    pub(super) const BOOL: u32 = 16;
    pub(super) const BYTEA: u32 = 17;
    pub(super) const NAME: u32 = 19;
    pub(super) const INT8: u32 = 20;
    pub(super) const INT2: u32 = 21;
    pub(super) const INT4: u32 = 23;
    pub(super) const TEXT: u32 = 25;
    pub(super) const JSON: u32 = 114;
    pub(super) const FLOAT4: u32 = 700;
    pub(super) const FLOAT8: u32 = 701;
    pub(super) const BPCHAR: u32 = 1042;
    pub(super) const VARCHAR: u32 = 1043;
    pub(super) const NUMERIC: u32 = 1700;
    pub(super) const UUID: u32 = 2950;
    pub(super) const JSONB: u32 = 3802;
}

/// Decodes one value in text format of the type with this OID.
pub(super) fn decode_text(type_oid: u32, text: &str) -> Value {
    let parsed = match type_oid {
        oid::BOOL => match text {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        oid::INT2 => text.parse().ok().map(Value::Int16),
        oid::INT4 => text.parse().ok().map(Value::Int32),
        oid::INT8 => text.parse().ok().map(Value::Int64),
        oid::FLOAT4 => match text {
            "NaN" => Some(Value::Float32(f32::NAN)),
            "Infinity" => Some(Value::Float32(f32::INFINITY)),
            "-Infinity" => Some(Value::Float32(f32::NEG_INFINITY)),
            _ => text.parse().ok().map(Value::Float32),
        },
        oid::FLOAT8 => parse_float(text).map(Value::Float64),
        oid::NUMERIC => Some(Value::Numeric(text.to_string())),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => Some(Value::Text(text.to_string())),
        oid::BYTEA => decode_hex_bytea(text).map(Value::Bytes),
        oid::JSON | oid::JSONB => Some(Value::Json(text.to_string())),
        oid::UUID => Some(Value::Uuid(text.to_string())),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::Native {
        type_name: format!("pg_type:{type_oid}"),
        text: text.to_string(),
    })
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

fn decode_hex_bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(hex.get(index..index + 2)?, 16).ok())
        .collect()
}

/// Encodes a value in PostgreSQL text format; `None` for NULL.
pub(super) fn encode_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(value) => if *value { "t" } else { "f" }.to_string(),
        Value::Int16(value) => value.to_string(),
        Value::Int32(value) => value.to_string(),
        Value::Int64(value) => value.to_string(),
        Value::UInt64(value) => value.to_string(),
        Value::Float32(value) => format_float(f64::from(*value), value.to_string()),
        Value::Float64(value) => format_float(*value, value.to_string()),
        Value::Numeric(text) | Value::Text(text) | Value::Json(text) | Value::Uuid(text) => {
            text.clone()
        }
        Value::Native { text, .. } => text.clone(),
        Value::Bytes(bytes) => {
            let mut text = String::with_capacity(2 + bytes.len() * 2);
            text.push_str("\\x");
            for byte in bytes {
                text.push_str(&format!("{byte:02x}"));
            }
            text
        }
    })
}

/// Rust prints the shortest text that reads back as the same float; PostgreSQL spells the
/// special values its own way.
fn format_float(value: f64, shortest: String) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "Infinity".into()
    } else if value == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        shortest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_text() {
        let cases: &[(u32, &str)] = &[
            (oid::BOOL, "t"),
            (oid::BOOL, "f"),
            (oid::INT2, "-32768"),
            (oid::INT4, "2147483647"),
            (oid::INT8, "-9223372036854775808"),
            (oid::FLOAT8, "0.1"),
            (oid::FLOAT8, "1e-320"),
            (oid::FLOAT8, "1.7976931348623157e+308"),
            (oid::FLOAT8, "-0"),
            (oid::FLOAT8, "Infinity"),
            (oid::FLOAT8, "-Infinity"),
            (oid::FLOAT8, "NaN"),
            (oid::FLOAT4, "3.4028235e+38"),
            (oid::FLOAT4, "0.1"),
            (
                oid::NUMERIC,
                "123456789012345678901234567890.000000000000000000001",
            ),
            (oid::NUMERIC, "NaN"),
            (oid::TEXT, "héllo \u{1F600} \t\n\\"),
            (oid::BYTEA, "\\x00ff10"),
            (oid::JSONB, "{\"a\": [1, 2.50]}"),
            (oid::UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            (1114, "2024-02-29 23:59:59.999999"),
            (1184, "infinity"),
        ];
        for (type_oid, text) in cases {
            let value = decode_text(*type_oid, text);
            let encoded = encode_text(&value).unwrap();
            // Floats may be respelled (1e-320 prints as a long decimal) but must read back equal.
            if matches!(*type_oid, oid::FLOAT8 | oid::FLOAT4) {
                let original = parse_float(text).unwrap();
                let back = parse_float(&encoded).unwrap();
                assert!(
                    original.to_bits() == back.to_bits() || (original.is_nan() && back.is_nan()),
                    "{text} -> {encoded}"
                );
            } else {
                assert_eq!(&encoded, text, "type {type_oid}");
            }
        }
    }

    #[test]
    fn unparsable_text_is_kept_exactly() {
        assert_eq!(
            decode_text(oid::INT4, "abc"),
            Value::Native {
                type_name: "pg_type:23".into(),
                text: "abc".into()
            }
        );
        assert_eq!(
            decode_text(oid::BYTEA, "\\x0"),
            Value::Native {
                type_name: "pg_type:17".into(),
                text: "\\x0".into()
            }
        );
        assert_eq!(encode_text(&Value::Null), None);
    }
}
