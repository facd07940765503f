//! PostgreSQL's COPY text format to and from ferry's neutral row encoding
//! ([`ferry_core::rows`]), for pairing PostgreSQL with another engine.
//!
//! Values another engine cannot have meant for PostgreSQL are refused with an error naming the
//! table, never replaced: a zero date (`0000-00-00`), a NUL character in text.

use bytes::Bytes;
use ferry_core::connector::ByteStream;
use ferry_core::rows::{encode_row, RowReader};
use ferry_core::{Error, Result, TableSchema, Value};
use futures_util::StreamExt;

use super::codec::{decode_text, encode_text};

/// The built-in type OID of a column type as `format_type` spells it, if ferry models it.
fn type_oid(native_type: &str) -> Option<u32> {
    let base = native_type.split('(').next().unwrap_or(native_type).trim();
    Some(match base {
        "boolean" => 16,
        "bytea" => 17,
        "name" => 19,
        "bigint" => 20,
        "smallint" => 21,
        "integer" => 23,
        "text" => 25,
        "json" => 114,
        "real" => 700,
        "double precision" => 701,
        "character" | "bpchar" => 1042,
        "character varying" => 1043,
        "numeric" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        _ => return None,
    })
}

/// Undoes COPY text escaping of one field.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut output = Vec::with_capacity(field.len());
    let mut index = 0;
    while index < field.len() {
        let byte = field[index];
        if byte != b'\\' || index + 1 >= field.len() {
            output.push(byte);
            index += 1;
            continue;
        }
        let next = field[index + 1];
        index += 2;
        match next {
            b'b' => output.push(8),
            b'f' => output.push(12),
            b'n' => output.push(b'\n'),
            b'r' => output.push(b'\r'),
            b't' => output.push(b'\t'),
            b'v' => output.push(11),
            b'0'..=b'7' => {
                let mut value = u32::from(next - b'0');
                let mut digits = 1;
                while digits < 3 && index < field.len() && (b'0'..=b'7').contains(&field[index]) {
                    value = value * 8 + u32::from(field[index] - b'0');
                    index += 1;
                    digits += 1;
                }
                output.push(value as u8);
            }
            b'x' => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 && index < field.len() && field[index].is_ascii_hexdigit() {
                    value = value * 16 + (field[index] as char).to_digit(16).unwrap_or(0);
                    index += 1;
                    digits += 1;
                }
                output.push(value as u8);
            }
            other => output.push(other),
        }
    }
    output
}

/// Decodes one COPY text line into values of `types`.
fn decode_line(
    line: &[u8],
    types: &[(Option<u32>, String)],
    table: &TableSchema,
) -> Result<Vec<Value>> {
    let fields: Vec<&[u8]> = line.split(|byte| *byte == b'\t').collect();
    if fields.len() != types.len() {
        return Err(Error::definite(
            "copy.malformed",
            format!(
                "a COPY row of {} has {} fields, expected {}",
                table.name,
                fields.len(),
                types.len()
            ),
        ));
    }
    fields
        .into_iter()
        .zip(types)
        .map(|(field, (oid, native))| {
            if field == b"\\N" {
                return Ok(Value::Null);
            }
            let text = String::from_utf8(unescape(field)).map_err(|_| {
                Error::definite(
                    "copy.malformed",
                    format!("a COPY field of {} is not UTF-8", table.name),
                )
            })?;
            Ok(match oid {
                Some(oid) => decode_text(*oid, &text),
                None => Value::Native {
                    type_name: native.clone(),
                    text,
                },
            })
        })
        .collect()
}

/// Re-encodes a COPY text stream of `table`'s writable columns as neutral rows.
pub(super) fn copy_text_to_rows(table: &TableSchema, mut input: ByteStream) -> ByteStream {
    let table = table.clone();
    let types: Vec<(Option<u32>, String)> = table
        .writable_columns()
        .map(|column| (type_oid(&column.native_type), column.native_type.clone()))
        .collect();
    let stream = async_stream_rows(move |sender| async move {
        let mut carry: Vec<u8> = Vec::new();
        let mut output = Vec::new();
        while let Some(item) = input.next().await {
            let item = item?;
            carry.extend_from_slice(&item);
            let mut start = 0;
            while let Some(end) = carry[start..].iter().position(|byte| *byte == b'\n') {
                encode_row(
                    &decode_line(&carry[start..start + end], &types, &table)?,
                    &mut output,
                );
                start += end + 1;
            }
            carry.drain(..start);
            if output.len() >= 256 * 1024
                && sender
                    .send(Ok(Bytes::from(std::mem::take(&mut output))))
                    .await
                    .is_err()
            {
                return Ok(());
            }
        }
        if !output.is_empty() {
            let _ = sender.send(Ok(Bytes::from(output))).await;
        }
        Ok(())
    });
    Box::pin(stream)
}

/// Runs `produce` on a task, yielding what it sends (and its error, if it fails).
fn async_stream_rows<F, Fut>(produce: F) -> impl futures_util::Stream<Item = Result<Bytes>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let errors = sender.clone();
    tokio::spawn(async move {
        if let Err(error) = produce(sender).await {
            let _ = errors.send(Err(error)).await;
        }
    });
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// Escapes one field for COPY text.
fn escape_into(text: &str, output: &mut Vec<u8>) {
    for byte in text.bytes() {
        match byte {
            b'\\' => output.extend_from_slice(b"\\\\"),
            b'\t' => output.extend_from_slice(b"\\t"),
            b'\n' => output.extend_from_slice(b"\\n"),
            b'\r' => output.extend_from_slice(b"\\r"),
            other => output.push(other),
        }
    }
}

/// Checks that PostgreSQL can store a value another engine produced.
fn representable(value: &Value, table: &TableSchema, column: &str) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::definite("target.unrepresentable_value", format!("{}.{column}: PostgreSQL cannot store {what}", table.name))
            .with_hint("fix the value on the source (e.g. UPDATE ... SET col = NULL WHERE col = '0000-00-00'), or leave the table out; see docs/mysql.md"))
    };
    match value {
        Value::Native { text, .. } if text.starts_with("0000-00-00") => {
            refuse(format!("the zero date '{text}'"))
        }
        Value::Text(text) | Value::Json(text) if text.contains('\0') => {
            refuse("a NUL character in text".into())
        }
        _ => Ok(()),
    }
}

/// Re-encodes neutral rows of `table`'s writable columns as COPY text.
pub(super) fn rows_to_copy_text(table: &TableSchema, mut input: ByteStream) -> ByteStream {
    let table = table.clone();
    let names: Vec<String> = table
        .writable_columns()
        .map(|column| column.name.clone())
        .collect();
    let stream = async_stream_rows(move |sender| async move {
        while let Some(item) = input.next().await {
            let item = item?;
            let mut reader = RowReader::new(&item);
            let mut output = Vec::with_capacity(item.len() + item.len() / 4);
            while let Some(row) = reader.next_row()? {
                for (index, value) in row.iter().enumerate() {
                    if index > 0 {
                        output.push(b'\t');
                    }
                    representable(
                        value,
                        &table,
                        names.get(index).map(String::as_str).unwrap_or("?"),
                    )?;
                    match encode_text(value) {
                        None => output.extend_from_slice(b"\\N"),
                        Some(text) => escape_into(&text, &mut output),
                    }
                }
                output.push(b'\n');
            }
            if sender.send(Ok(Bytes::from(output))).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_fields_unescape() {
        assert_eq!(unescape(b"a\\tb\\\\c\\nd"), b"a\tb\\c\nd");
        assert_eq!(unescape(b"\\101\\x42"), b"AB");
        let mut output = Vec::new();
        escape_into("a\tb\\c\nd", &mut output);
        assert_eq!(unescape(&output), b"a\tb\\c\nd");
    }
}
