//! Lossless values.
//!
//! A value keeps everything its source stored: decimals keep every digit and their scale (and
//! NaN and infinities), floats keep their exact bits, bytes stay bytes, JSON stays the JSON text
//! the source produced, unsigned 64-bit integers stay unsigned. A type ferry does not model yet
//! travels as [`Value::Native`]: its exact text in the source engine's own notation together with
//! the type's name, so a sink of the same engine can write it back exactly and a sink of another
//! engine can refuse it up front instead of guessing.

use serde::{Deserialize, Serialize};

/// One value of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    UInt64(u64),
    Float32(f32),
    Float64(f64),
    /// An exact decimal in plain notation (`-12.3400`), or `NaN`, `Infinity`, `-Infinity`.
    Numeric(String),
    Text(String),
    Bytes(Vec<u8>),
    /// JSON text exactly as the source rendered it.
    Json(String),
    /// A UUID in canonical lowercase hyphenated form.
    Uuid(String),
    /// A value of a type not modelled above, in its source engine's exact text form.
    Native {
        type_name: String,
        text: String,
    },
}

/// One column of a row image read from a change log.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// The column's value.
    Value(Value),
    /// The column did not change and its value was not logged (PostgreSQL leaves unchanged
    /// TOASTed values out of the WAL). A sink must keep the value it has: never write NULL or a
    /// placeholder over it.
    Unchanged,
}

impl Cell {
    /// True when the value is absent from the image.
    pub fn is_unchanged(&self) -> bool {
        matches!(self, Cell::Unchanged)
    }
}

impl Value {
    /// About how many bytes the value takes in memory (for bounding batches; not exact).
    pub fn approximate_size(&self) -> usize {
        16 + match self {
            Value::Numeric(text)
            | Value::Text(text)
            | Value::Json(text)
            | Value::Uuid(text)
            | Value::Native { text, .. } => text.len(),
            Value::Bytes(bytes) => bytes.len(),
            _ => 0,
        }
    }

    /// A stable text form used to recognise the same key twice within a batch. Two values of the
    /// same column have equal forms exactly when they are equal values.
    pub fn key_form(&self, output: &mut String) {
        use std::fmt::Write;
        // A tag per variant so that, say, Text("1") and Int32(1) never collide; a length prefix so
        // that concatenations of several key columns stay unambiguous.
        let (tag, body): (&str, std::borrow::Cow<'_, str>) = match self {
            Value::Null => ("n", "".into()),
            Value::Bool(value) => ("b", value.to_string().into()),
            Value::Int16(value) => ("i", value.to_string().into()),
            Value::Int32(value) => ("i", value.to_string().into()),
            Value::Int64(value) => ("i", value.to_string().into()),
            Value::UInt64(value) => ("i", value.to_string().into()),
            Value::Float32(value) => ("f", value.to_bits().to_string().into()),
            Value::Float64(value) => ("d", value.to_bits().to_string().into()),
            Value::Numeric(text) => ("m", text.as_str().into()),
            Value::Text(text) => ("t", text.as_str().into()),
            Value::Bytes(bytes) => (
                "y",
                bytes
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>()
                    .into(),
            ),
            Value::Json(text) => ("j", text.as_str().into()),
            Value::Uuid(text) => ("u", text.as_str().into()),
            Value::Native { text, .. } => ("x", text.as_str().into()),
        };
        let _ = write!(output, "{tag}{}:{body}", body.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(values: &[Value]) -> String {
        let mut output = String::new();
        for value in values {
            value.key_form(&mut output);
        }
        output
    }

    #[test]
    fn key_forms_do_not_collide_across_columns_or_types() {
        assert_ne!(
            form(&[Value::Text("a".into()), Value::Text("bc".into())]),
            form(&[Value::Text("ab".into()), Value::Text("c".into())])
        );
        assert_ne!(form(&[Value::Text("1".into())]), form(&[Value::Int32(1)]));
        assert_eq!(form(&[Value::Int64(7)]), form(&[Value::Int64(7)]));
        assert_ne!(form(&[Value::Float64(0.0)]), form(&[Value::Float64(-0.0)]));
    }
}
