//! What both SQL sinks say when a column's type changed on the source while streaming in a way
//! they do not follow (each decides widenings in its own dialect: `postgres/widen.rs`,
//! `mysql/widen.rs`).

use ferry_core::{Error, TableName};

/// The error that stops `table` (the next run copies it afresh): `column` changed type on the
/// source from `before` to `now`, which is not a widening.
pub fn column_retyped(table: &TableName, column: &str, before: &str, now: &str) -> Error {
    Error::operator(
        "stream.column_retyped",
        format!(
            "column {column} of {table} changed type on the source from {before} to {now}: ferry follows widened types only"
        ),
    )
    .with_hint("the table is copied afresh on the next run (ferry run)")
}
