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
use ferry_core::{Error, Result, TableName, Value};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Transaction};

use super::ddl::ident;
use super::errors::classify;
use super::types::Kind;
use super::values::{plain, Plain};

/// Server errors that mean "LOCAL is not allowed here" (MySQL 1148 / 3948, MariaDB 1148 / 4166).
pub(crate) const LOCAL_REFUSED: &[u16] = &[1148, 3948, 4166];

/// The `LOAD DATA` statement for these columns of `table`.
pub(crate) fn statement(table: &str, names: &[&str], kinds: &[Kind]) -> String {
    statement_from("ferry-chunk", table, names, kinds, false)
}

/// The `LOAD DATA` statement reading the file `file` into these columns of `table`; with
/// `replace`, a row replaces the row of the same key.
pub(crate) fn statement_from(
    file: &str,
    table: &str,
    names: &[&str],
    kinds: &[Kind],
    replace: bool,
) -> String {
    let mut fields = Vec::with_capacity(names.len());
    let mut assignments = Vec::new();
    for (index, (name, kind)) in names.iter().zip(kinds).enumerate() {
        let conversion = match kind {
            Kind::Binary { .. } | Kind::Spatial => Some("UNHEX(@v{})"),
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
        "LOAD DATA LOCAL INFILE '{file}' {}INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY X'09' ESCAPED BY X'5C' LINES TERMINATED BY X'0A' ({})",
        if replace { "REPLACE " } else { "" },
        ident(table),
        fields.join(", ")
    );
    if !assignments.is_empty() {
        statement.push_str(" SET ");
        statement.push_str(&assignments.join(", "));
    }
    statement
}

/// Piece size of the streamed file: LOAD data need not follow row boundaries, and pieces well
/// under `max_allowed_packet` let a row of any size through.
const PIECE_BYTES: usize = 1024 * 1024;

/// `data` as a LOCAL handler sends it: pieces of at most [`PIECE_BYTES`].
pub(crate) fn pieces(data: &Bytes) -> Vec<std::io::Result<Bytes>> {
    (0..data.len())
        .step_by(PIECE_BYTES)
        .map(|start| Ok(data.slice(start..(start + PIECE_BYTES).min(data.len()))))
        .collect()
}

/// Appends one field for a column of kind `kind`: `\N` for NULL, otherwise the text the
/// statement's conversion for that column turns back into exactly the value an INSERT literal
/// would store.
pub(crate) fn push_field(value: &Plain<'_>, kind: &Kind, output: &mut Vec<u8>) -> Result<()> {
    let unrepresentable = |what: &str| {
        Err(Error::definite(
            "target.unrepresentable_value",
            format!("the MySQL target cannot store {what}"),
        )
        .with_hint("change the target column's type to match the source (see docs/mysql.md)"))
    };
    match (kind, value) {
        (_, Plain::Null) => output.extend_from_slice(b"\\N"),
        // Binary columns take hex through UNHEX: the same bytes an INSERT literal stores.
        (Kind::Binary { .. } | Kind::Spatial, Plain::Bytes(bytes)) => push_hex(bytes, output),
        // Anything else would go through UNHEX as text and could arrive as NULL: refused, as
        // the INSERT literal's server would refuse it.
        (Kind::Spatial, _) => {
            return unrepresentable("a value that is not a geometry in a spatial column")
        }
        (Kind::Binary { .. }, Plain::Text(text)) => push_hex(text.as_bytes(), output),
        (Kind::Binary { .. }, Plain::Number(number)) => push_hex(number.as_bytes(), output),
        (Kind::Binary { .. }, Plain::Bits(bits)) => push_hex(&bits_to_bytes(bits), output),
        // BIT columns take binary digits through CONV.
        (Kind::Bit { .. }, Plain::Bits(bits)) if bits.is_empty() => output.push(b'0'),
        (Kind::Bit { .. }, Plain::Bits(bits)) => output.extend_from_slice(bits.as_bytes()),
        (Kind::Bit { .. }, Plain::Number(number)) => match number.parse::<u64>() {
            Ok(number) => output.extend_from_slice(format!("{number:b}").as_bytes()),
            Err(_) => return unrepresentable(&format!("{number} in a BIT column")),
        },
        (Kind::Bit { .. }, _) => return unrepresentable("text or bytes in a BIT column"),
        // A YEAR field of fewer than four digits is read as a two-digit year (0 becomes 2000).
        (Kind::Year, Plain::Number(number)) => {
            output.extend_from_slice(format!("{number:0>4}").as_bytes())
        }
        (Kind::Year, Plain::Text(text)) if text.bytes().all(|byte| byte.is_ascii_digit()) => {
            output.extend_from_slice(format!("{text:0>4}").as_bytes())
        }
        (_, Plain::Number(number)) => output.extend_from_slice(number.as_bytes()),
        (_, Plain::Bytes(_)) => {
            return unrepresentable(
                "bytes in a column that is not binary (bytes have no character set)",
            )
        }
        (_, Plain::Bits(_)) => return unrepresentable("a bit string in a column that is not BIT"),
        (_, Plain::Text(text)) => {
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
    Ok(())
}

fn push_hex(bytes: &[u8], output: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for byte in bytes {
        output.push(DIGITS[usize::from(byte >> 4)]);
        output.push(DIGITS[usize::from(byte & 15)]);
    }
}

/// The bytes of a bit string, as MySQL stores `b'...'` in a binary column (right-aligned).
fn bits_to_bytes(bits: &str) -> Vec<u8> {
    let padded = format!("{}{bits}", "0".repeat((8 - bits.len() % 8) % 8));
    padded
        .as_bytes()
        .chunks(8)
        .map(|byte| {
            byte.iter()
                .fold(0u8, |acc, bit| (acc << 1) | u8::from(*bit == b'1'))
        })
        .collect()
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
        push_line(&row, kinds, &mut output).map_err(|(_, error)| error)?;
        rows.fetch_add(1, Ordering::Relaxed);
    }
    Ok(output)
}

/// Appends one row as a `LOAD DATA` line (its values in the order of `kinds`, the target
/// columns' kinds). On a value the column cannot take: the column's position and the error.
pub(crate) fn push_line<'a>(
    values: impl IntoIterator<Item = &'a Value>,
    kinds: &[Kind],
    output: &mut Vec<u8>,
) -> std::result::Result<(), (usize, Error)> {
    for (index, (value, kind)) in values.into_iter().zip(kinds).enumerate() {
        if index > 0 {
            output.push(b'\t');
        }
        plain(value, kind)
            .and_then(|plain| push_field(&plain, kind, output))
            .map_err(|error| (index, error))?;
    }
    output.push(b'\n');
    Ok(())
}

/// What became of a load.
pub(crate) enum Loaded {
    /// The rows are in the (still open) transaction: this many.
    Rows(u64),
    /// The server does not allow `LOCAL`; here are the rows back, untouched.
    Refused(ByteStream),
}

/// A load made ready on a connection: its infile handler is set and holds the rows until the
/// server asks for the file. Set it up before the transaction starts (mysql_async's transaction
/// only lends the connection out for queries), run it inside. Dropping it takes the rows back
/// from the handler, so an unused handler holds no source stream.
pub(crate) struct PreparedLoad {
    table: TableName,
    statement: String,
    pending: Arc<Mutex<Option<ByteStream>>>,
    sent: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<Error>>>,
}

impl Drop for PreparedLoad {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.pending.lock() {
            slot.take();
        }
    }
}

/// Sets `conn`'s infile handler to stream `rows` into `table` as `LOAD DATA` lines. Values that
/// cannot be converted stop the load with their own error.
pub(crate) fn prepare(
    conn: &mut Conn,
    table: &TableName,
    names: &[&str],
    kinds: &[Kind],
    rows: ByteStream,
) -> PreparedLoad {
    let prepared = PreparedLoad {
        table: table.clone(),
        statement: statement(&table.name, names, kinds),
        pending: Arc::new(Mutex::new(Some(rows))),
        sent: Arc::default(),
        failure: Arc::default(),
    };
    let (pending, sent, failure, kinds) = (
        prepared.pending.clone(),
        prepared.sent.clone(),
        prepared.failure.clone(),
        kinds.to_vec(),
    );
    conn.set_infile_handler(async move {
        let rows = pending
            .lock()
            .ok()
            .and_then(|mut slot| slot.take())
            .ok_or_else(|| std::io::Error::other("the chunk was already sent"))?;
        let data = rows.flat_map(move |item| {
            let pieces = match item.and_then(|item| lines(&item, &kinds, &sent)) {
                Ok(text) => pieces(&Bytes::from(text)),
                Err(error) => {
                    let text = error.to_string();
                    if let Ok(mut slot) = failure.lock() {
                        slot.get_or_insert(error);
                    }
                    vec![Err(std::io::Error::other(text))]
                }
            };
            futures_util::stream::iter(pieces)
        });
        Ok::<mysql_async::InfileData, mysql_async::Error>(Box::pin(data))
    });
    prepared
}

impl PreparedLoad {
    /// Runs the load in `transaction` (on the connection it was prepared on). Accepted only when
    /// the server reports no warning and every row sent.
    pub(crate) async fn run(&self, transaction: &mut Transaction<'_>) -> Result<Loaded> {
        let (table, what) = (&self.table, format!("loading {} on the target", self.table));
        let result = transaction.query_drop(self.statement.as_str()).await;
        if let Some(error) = self.failure.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(error.with_table(table.clone()));
        }
        if let Err(mysql_async::Error::Server(server)) = &result {
            if LOCAL_REFUSED.contains(&server.code) {
                if let Some(rows) = self.pending.lock().ok().and_then(|mut slot| slot.take()) {
                    return Ok(Loaded::Refused(rows));
                }
            }
        }
        result.map_err(|error| classify(error, &what).with_table(table.clone()))?;
        let sent = self.sent.load(Ordering::Relaxed);
        let affected = transaction.affected_rows();
        require_every_line(
            transaction,
            &what,
            affected,
            sent,
            "nothing of this chunk was kept",
        )
        .await
        .map_err(|error| error.with_table(table.clone()))?;
        Ok(Loaded::Rows(sent))
    }
}

/// Accepts a load only when the server took every one of the `expected` lines without a
/// warning (`LOCAL` turns a value the server refuses into a warning and goes on); otherwise the
/// error says how many it took and shows its first warnings. `outcome` ends the hint: what
/// became of the rows.
pub(crate) async fn require_every_line(
    transaction: &mut Transaction<'_>,
    what: &str,
    taken: u64,
    expected: u64,
    outcome: &str,
) -> Result<()> {
    let warnings = transaction.get_warnings();
    if warnings == 0 && taken == expected {
        return Ok(());
    }
    let shown = warnings_shown(transaction, what).await?;
    Err(Error::definite(
        "target.rejected_value",
        format!("{what}: the server took {taken} of {expected} rows with {warnings} warnings ({shown})"),
    )
    .with_hint(format!("the target cannot store a value as the source has it (see the warnings and the type mapping in docs/mysql.md); {outcome}")))
}

/// The first warnings of the last statement, as `Level code: message; ...`.
pub(crate) async fn warnings_shown<Q: Queryable>(conn: &mut Q, what: &str) -> Result<String> {
    let shown: Vec<(String, u32, String)> = conn
        .query("SHOW WARNINGS LIMIT 5")
        .await
        .map_err(|error| classify(error, what))?;
    let shown: Vec<String> = shown
        .into_iter()
        .map(|(level, code, message)| format!("{level} {code}: {message}"))
        .collect();
    Ok(shown.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: Plain<'_>) -> String {
        let kind = match &value {
            Plain::Bytes(_) => Kind::Binary { fixed: None },
            Plain::Bits(_) => Kind::Bit { width: 8 },
            _ => Kind::Text {
                charset: "utf8mb4".into(),
            },
        };
        field_for(value, &kind).unwrap()
    }

    fn field_for(value: Plain<'_>, kind: &Kind) -> Result<String> {
        let mut output = Vec::new();
        push_field(&value, kind, &mut output)?;
        Ok(String::from_utf8(output).unwrap())
    }

    #[test]
    fn a_spatial_column_takes_geometry_bytes_only() {
        assert_eq!(
            field_for(Plain::Bytes(vec![1, 255].into()), &Kind::Spatial).unwrap(),
            "01FF"
        );
        for value in [Plain::Text("POINT(1 2)"), Plain::Number("7".into())] {
            assert_eq!(
                field_for(value, &Kind::Spatial).unwrap_err().code(),
                "target.unrepresentable_value"
            );
        }
    }

    #[test]
    fn fields_carry_what_an_insert_literal_would_store() {
        let binary = Kind::Binary { fixed: None };
        let bit = Kind::Bit { width: 16 };
        assert_eq!(field_for(Plain::Text("ab"), &binary).unwrap(), "6162");
        assert_eq!(field_for(Plain::Number("5".into()), &binary).unwrap(), "35");
        assert_eq!(
            field_for(Plain::Bits("100000001".into()), &binary).unwrap(),
            "0101"
        );
        assert_eq!(field_for(Plain::Number("5".into()), &bit).unwrap(), "101");
        assert!(field_for(Plain::Number("-5".into()), &bit).is_err());
        assert!(field_for(Plain::Text("5"), &bit).is_err());
        assert!(field_for(Plain::Bytes((&[1][..]).into()), &Kind::Json).is_err());
        assert_eq!(
            field_for(Plain::Number("0".into()), &Kind::Year).unwrap(),
            "0000"
        );
        assert_eq!(
            field_for(Plain::Number("1999".into()), &Kind::Year).unwrap(),
            "1999"
        );
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
        assert_eq!(field(Plain::Bytes((&[0, 0x9f, 255][..]).into())), "009FFF");
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
