//! Bulk loading a MySQL target with `LOAD DATA LOCAL INFILE`, streamed from memory.
//!
//! The "file" is the chunk's rows turned into tab-separated UTF-8 lines while the server reads
//! them; nothing touches a disk. The separators are written as hex literals (tab, backslash,
//! newline) because ferry's sessions run with NO_BACKSLASH_ESCAPES. Text goes in as it is
//! (escaped), binary values as hex through a user variable and `UNHEX`, BIT values as binary
//! digits through `CONV`, so every byte arrives unchanged whatever the file's character set.
//!
//! `LOCAL` has one dangerous property: the server cannot stop the client mid-file, so it turns
//! errors (a value that does not fit, a duplicate key) into warnings and goes on. A load is
//! therefore accepted only when the server reports no warning and exactly as many rows as were
//! sent; anything else rolls the chunk back with the server's own warnings in the error.
//!
//! When the server or the user refuses `LOCAL` (`local_infile = OFF`), the writer falls back to
//! multi-row INSERTs for the rest of its session; the rows are not lost because the stream is
//! handed back untouched (the server refuses before it asks for the file).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_core::connector::ByteStream;
use ferry_core::rows::RowReader;
use ferry_core::{Error, Result, TableName};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::ddl::ident;
use super::errors::classify;
use super::types::Kind;
use super::values::{plain, Plain};

/// Server errors that mean "LOCAL is not allowed here" (MySQL 1148 / 3948, MariaDB 1148 / 4166).
const LOCAL_REFUSED: &[u16] = &[1148, 3948, 4166];

/// The `LOAD DATA` statement for these columns of `table`.
pub(crate) fn statement(table: &str, names: &[&str], kinds: &[Kind]) -> String {
    let mut fields = Vec::with_capacity(names.len());
    let mut assignments = Vec::new();
    for (index, (name, kind)) in names.iter().zip(kinds).enumerate() {
        let conversion = match kind {
            Kind::Binary { .. } => Some("UNHEX(@v{})"),
            Kind::Bit { .. } => Some("CAST(CONV(@v{}, 2, 10) AS UNSIGNED)"),
            _ => None,
        };
        match conversion {
            Some(conversion) => {
                fields.push(format!("@v{index}"));
                assignments.push(format!(
                    "{} = {}",
                    ident(name),
                    conversion.replace("{}", &index.to_string())
                ));
            }
            None => fields.push(ident(name)),
        }
    }
    let mut statement = format!(
        "LOAD DATA LOCAL INFILE 'ferry-chunk' INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY X'09' ESCAPED BY X'5C' LINES TERMINATED BY X'0A' ({})",
        ident(table),
        fields.join(", ")
    );
    if !assignments.is_empty() {
        statement.push_str(" SET ");
        statement.push_str(&assignments.join(", "));
    }
    statement
}

/// Appends one field: `\N` for NULL, escaped text otherwise.
pub(crate) fn push_field(value: &Plain<'_>, output: &mut Vec<u8>) {
    match value {
        Plain::Null => output.extend_from_slice(b"\\N"),
        Plain::Number(number) => output.extend_from_slice(number.as_bytes()),
        Plain::Bits(bits) if bits.is_empty() => output.push(b'0'),
        Plain::Bits(bits) => output.extend_from_slice(bits.as_bytes()),
        Plain::Bytes(bytes) => {
            const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
            for byte in *bytes {
                output.push(DIGITS[usize::from(byte >> 4)]);
                output.push(DIGITS[usize::from(byte & 15)]);
            }
        }
        Plain::Text(text) => {
            for &byte in text.as_bytes() {
                match byte {
                    b'\\' => output.extend_from_slice(b"\\\\"),
                    b'\t' => output.extend_from_slice(b"\\t"),
                    b'\n' => output.extend_from_slice(b"\\n"),
                    b'\r' => output.extend_from_slice(b"\\r"),
                    0 => output.extend_from_slice(b"\\0"),
                    other => output.push(other),
                }
            }
        }
    }
}

/// One stream item (whole rows in the neutral encoding) as `LOAD DATA` lines.
fn lines(item: &[u8], kinds: &[Kind], rows: &AtomicU64) -> Result<Vec<u8>> {
    let mut output = Vec::with_capacity(item.len() + item.len() / 4);
    let mut reader = RowReader::new(item);
    while let Some(row) = reader.next_row()? {
        if row.len() != kinds.len() {
            return Err(Error::definite(
                "copy.row_shape",
                format!(
                    "a row with {} values for {} columns",
                    row.len(),
                    kinds.len()
                ),
            ));
        }
        for (index, (value, kind)) in row.iter().zip(kinds).enumerate() {
            if index > 0 {
                output.push(b'\t');
            }
            push_field(&plain(value, kind)?, &mut output);
        }
        output.push(b'\n');
        rows.fetch_add(1, Ordering::Relaxed);
    }
    Ok(output)
}

/// What became of a load.
pub(crate) enum Loaded {
    /// The rows are in the (still open) transaction: this many.
    Rows(u64),
    /// The server does not allow `LOCAL`; here are the rows back, untouched.
    Refused(ByteStream),
}

/// Streams `rows` into `table` with `LOAD DATA LOCAL` on `conn`, inside the caller's open
/// transaction. Values that cannot be converted stop the load with their own error.
pub(crate) async fn load(
    conn: &mut Conn,
    table: &TableName,
    names: &[&str],
    kinds: &[Kind],
    rows: ByteStream,
) -> Result<Loaded> {
    let what = format!("loading {} on the target", table);
    let sent = Arc::new(AtomicU64::new(0));
    let failure: Arc<Mutex<Option<Error>>> = Arc::default();
    let pending: Arc<Mutex<Option<ByteStream>>> = Arc::new(Mutex::new(Some(rows)));
    let handler = {
        let (pending, sent, failure, kinds) = (
            pending.clone(),
            sent.clone(),
            failure.clone(),
            kinds.to_vec(),
        );
        async move {
            let rows = pending
                .lock()
                .ok()
                .and_then(|mut slot| slot.take())
                .ok_or_else(|| std::io::Error::other("the chunk was already sent"))?;
            let data = rows.map(move |item| {
                let converted = item.and_then(|item| lines(&item, &kinds, &sent));
                converted.map(Bytes::from).map_err(|error| {
                    let text = error.to_string();
                    if let Ok(mut slot) = failure.lock() {
                        slot.get_or_insert(error);
                    }
                    std::io::Error::other(text)
                })
            });
            Ok::<mysql_async::InfileData, mysql_async::Error>(Box::pin(data))
        }
    };
    conn.set_infile_handler(handler);
    let result = conn.query_drop(statement(&table.name, names, kinds)).await;
    if let Some(error) = failure.lock().ok().and_then(|mut slot| slot.take()) {
        return Err(error.with_table(table.clone()));
    }
    if let Err(mysql_async::Error::Server(server)) = &result {
        if LOCAL_REFUSED.contains(&server.code) {
            if let Some(rows) = pending.lock().ok().and_then(|mut slot| slot.take()) {
                return Ok(Loaded::Refused(rows));
            }
        }
    }
    result.map_err(|error| classify(error, &what).with_table(table.clone()))?;
    let sent = sent.load(Ordering::Relaxed);
    let (affected, warnings) = (conn.affected_rows(), conn.get_warnings());
    if warnings > 0 || affected != sent {
        let shown: Vec<(String, u32, String)> = conn
            .query("SHOW WARNINGS LIMIT 5")
            .await
            .map_err(|error| classify(error, &what))?;
        let shown: Vec<String> = shown
            .into_iter()
            .map(|(level, code, message)| format!("{level} {code}: {message}"))
            .collect();
        return Err(Error::definite(
            "target.rejected_value",
            format!(
                "{what}: the server took {affected} of {sent} rows with {warnings} warnings ({})",
                shown.join("; ")
            ),
        )
        .with_table(table.clone())
        .with_hint("the target cannot store a value as the source has it (see the warnings and the type mapping in docs/mysql.md); nothing of this chunk was kept"));
    }
    Ok(Loaded::Rows(sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: Plain<'_>) -> String {
        let mut output = Vec::new();
        push_field(&value, &mut output);
        String::from_utf8(output).unwrap()
    }

    #[test]
    fn fields_escape_what_load_data_would_read_as_structure() {
        assert_eq!(field(Plain::Null), "\\N");
        assert_eq!(field(Plain::Text("\\N")), "\\\\N");
        assert_eq!(
            field(Plain::Text("a\tb\nc\\d\re\0f")),
            "a\\tb\\nc\\\\d\\re\\0f"
        );
        assert_eq!(field(Plain::Text("Łukasz 顧客")), "Łukasz 顧客");
        assert_eq!(field(Plain::Bytes(&[0, 0x9f, 255])), "009FFF");
        assert_eq!(field(Plain::Bits(String::new())), "0");
        assert_eq!(field(Plain::Bits("101".into())), "101");
        assert_eq!(field(Plain::Number("-1.50".into())), "-1.50");
    }

    #[test]
    fn binary_and_bit_columns_go_through_variables() {
        let statement = statement(
            "t",
            &["id", "raw", "flags"],
            &[
                Kind::Integer {
                    bits: 32,
                    unsigned: false,
                },
                Kind::Binary { fixed: None },
                Kind::Bit { width: 3 },
            ],
        );
        assert!(
            statement.ends_with(
                "(`id`, @v1, @v2) SET `raw` = UNHEX(@v1), `flags` = CAST(CONV(@v2, 2, 10) AS UNSIGNED)"
            ),
            "{statement}"
        );
        assert!(statement.contains("FIELDS TERMINATED BY X'09' ESCAPED BY X'5C'"));
    }
}
