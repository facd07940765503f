//! The neutral chunk encoding ([`crate::connector::ChunkFormat::Rows`]): rows of [`Value`]s in a
//! compact binary form that every connector can produce and load, so any source can feed any
//! sink. Engines of the same kind keep their faster native formats.
//!
//! Layout, per row: the column count (u16, little-endian), then per value a tag byte and its
//! payload: fixed-width numbers little-endian, texts and bytes as a u32 length and the bytes.
//! A stream's items each hold whole rows, so a decoder never waits for the rest of a row.

use crate::error::{Error, Result};
use crate::value::Value;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT16: u8 = 3;
const INT32: u8 = 4;
const INT64: u8 = 5;
const UINT64: u8 = 6;
const FLOAT32: u8 = 7;
const FLOAT64: u8 = 8;
const NUMERIC: u8 = 9;
const TEXT: u8 = 10;
const BYTES: u8 = 11;
const JSON: u8 = 12;
const UUID: u8 = 13;
const NATIVE: u8 = 14;

/// Appends one row to `output`.
pub fn encode_row(row: &[Value], output: &mut Vec<u8>) {
    output.extend_from_slice(&(row.len() as u16).to_le_bytes());
    for value in row {
        encode_value(value, output);
    }
}

fn put_bytes(tag: u8, bytes: &[u8], output: &mut Vec<u8>) {
    output.push(tag);
    output.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    output.extend_from_slice(bytes);
}

fn encode_value(value: &Value, output: &mut Vec<u8>) {
    match value {
        Value::Null => output.push(NULL),
        Value::Bool(false) => output.push(FALSE),
        Value::Bool(true) => output.push(TRUE),
        Value::Int16(number) => {
            output.push(INT16);
            output.extend_from_slice(&number.to_le_bytes());
        }
        Value::Int32(number) => {
            output.push(INT32);
            output.extend_from_slice(&number.to_le_bytes());
        }
        Value::Int64(number) => {
            output.push(INT64);
            output.extend_from_slice(&number.to_le_bytes());
        }
        Value::UInt64(number) => {
            output.push(UINT64);
            output.extend_from_slice(&number.to_le_bytes());
        }
        Value::Float32(number) => {
            output.push(FLOAT32);
            output.extend_from_slice(&number.to_bits().to_le_bytes());
        }
        Value::Float64(number) => {
            output.push(FLOAT64);
            output.extend_from_slice(&number.to_bits().to_le_bytes());
        }
        Value::Numeric(text) => put_bytes(NUMERIC, text.as_bytes(), output),
        Value::Text(text) => put_bytes(TEXT, text.as_bytes(), output),
        Value::Bytes(bytes) => put_bytes(BYTES, bytes, output),
        Value::Json(text) => put_bytes(JSON, text.as_bytes(), output),
        Value::Uuid(text) => put_bytes(UUID, text.as_bytes(), output),
        Value::Native { type_name, text } => {
            put_bytes(NATIVE, type_name.as_bytes(), output);
            output.extend_from_slice(&(text.len() as u32).to_le_bytes());
            output.extend_from_slice(text.as_bytes());
        }
    }
}

/// Reads rows back from one stream item.
pub struct RowReader<'a> {
    input: &'a [u8],
}

fn malformed(what: &str) -> Error {
    Error::definite(
        "data.malformed_rows",
        format!("a chunk in ferry's row encoding is malformed: {what}"),
    )
}

impl<'a> RowReader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        RowReader { input }
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        if self.input.len() < count {
            return Err(malformed("it ends inside a value"));
        }
        let (head, rest) = self.input.split_at(count);
        self.input = rest;
        Ok(head)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(self.take(N)?);
        Ok(bytes)
    }

    fn sized(&mut self) -> Result<&'a [u8]> {
        let length = u32::from_le_bytes(self.fixed()?) as usize;
        self.take(length)
    }

    fn text(&mut self) -> Result<String> {
        String::from_utf8(self.sized()?.to_vec()).map_err(|_| malformed("a text is not UTF-8"))
    }

    /// The next row, or `None` at the end of the item.
    pub fn next_row(&mut self) -> Result<Option<Vec<Value>>> {
        if self.input.is_empty() {
            return Ok(None);
        }
        let count = u16::from_le_bytes(self.fixed()?) as usize;
        let mut row = Vec::with_capacity(count);
        for _ in 0..count {
            let tag = self.take(1)?[0];
            row.push(match tag {
                NULL => Value::Null,
                FALSE => Value::Bool(false),
                TRUE => Value::Bool(true),
                INT16 => Value::Int16(i16::from_le_bytes(self.fixed()?)),
                INT32 => Value::Int32(i32::from_le_bytes(self.fixed()?)),
                INT64 => Value::Int64(i64::from_le_bytes(self.fixed()?)),
                UINT64 => Value::UInt64(u64::from_le_bytes(self.fixed()?)),
                FLOAT32 => Value::Float32(f32::from_bits(u32::from_le_bytes(self.fixed()?))),
                FLOAT64 => Value::Float64(f64::from_bits(u64::from_le_bytes(self.fixed()?))),
                NUMERIC => Value::Numeric(self.text()?),
                TEXT => Value::Text(self.text()?),
                BYTES => Value::Bytes(self.sized()?.to_vec()),
                JSON => Value::Json(self.text()?),
                UUID => Value::Uuid(self.text()?),
                NATIVE => Value::Native {
                    type_name: self.text()?,
                    text: self.text()?,
                },
                other => return Err(malformed(&format!("unknown value tag {other}"))),
            });
        }
        Ok(Some(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_exactly() {
        let rows = vec![
            vec![
                Value::Null,
                Value::Bool(true),
                Value::Bool(false),
                Value::Int16(-7),
                Value::Int32(i32::MIN),
                Value::Int64(i64::MAX),
                Value::UInt64(u64::MAX),
                Value::Float32(-0.0),
                Value::Float64(f64::NAN),
            ],
            vec![
                Value::Numeric("-12345678901234567890.000100".into()),
                Value::Text("naïve\t\\N\n".into()),
                Value::Bytes(vec![0, 255, 10]),
                Value::Json("{\"a\": [1, 2]}".into()),
                Value::Uuid("0e0a8a8e-7f0b-4c3c-9a55-2d2d2d2d2d2d".into()),
                Value::Native {
                    type_name: "datetime".into(),
                    text: "2024-02-29 23:59:59.999999".into(),
                },
            ],
        ];
        let mut encoded = Vec::new();
        for row in &rows {
            encode_row(row, &mut encoded);
        }
        let mut reader = RowReader::new(&encoded);
        let first = reader.next_row().unwrap().unwrap();
        assert_eq!(first[..8], rows[0][..8]);
        assert!(matches!(first[8], Value::Float64(value) if value.is_nan()));
        match first[7] {
            Value::Float32(value) => assert!(value.is_sign_negative()),
            _ => panic!("float lost"),
        }
        assert_eq!(reader.next_row().unwrap().unwrap(), rows[1]);
        assert_eq!(reader.next_row().unwrap(), None);
        assert!(RowReader::new(&encoded[..encoded.len() - 1])
            .next_row()
            .and_then(|_| RowReader::new(&encoded[..5]).next_row())
            .is_err());
    }
}
