//! Row images read straight from a rows event's bytes.
//!
//! `RowsEventData::rows` builds, for every row image, a `Column` per column with the database,
//! table and column names copied in, and parses the table map's optional metadata again: about
//! half of ferry's CPU while streaming a large MariaDB transaction (call-graph profile of
//! `scripts/profile-mysql-apply.sh`). Here the per-column layout (type, metadata, signedness) is
//! read once per event and each image yields its values only.
//!
//! The bytes are read exactly as mysql_common reads them: per row, the before image when the
//! event has one, then the after image; each image is a null bitmap over the columns present
//! in it (least significant bit first), then one `BinlogValue` per present, non-null column.
//! An image holds only its present columns, so a partial image stays short and is refused by
//! the caller as before. MySQL's partial JSON updates (`PARTIAL_UPDATE_ROWS_EVENT`, whose after
//! images carry a shared-image header) keep mysql_common's own reader.

use std::io;

use mysql_async::binlog::events::{OptionalMetaExtractor, RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_common::io::ParseBuf;

/// One row's before and after images (each absent when the event kind has none).
pub(crate) type Images = (
    Option<Vec<BinlogValue<'static>>>,
    Option<Vec<BinlogValue<'static>>>,
);

/// How to read each column of a table map's rows: type, metadata, whether unsigned.
struct Layout<'a> {
    columns: Vec<(ColumnType, &'a [u8], bool)>,
}

impl<'a> Layout<'a> {
    fn of(table_map: &'a TableMapEvent<'a>) -> io::Result<Layout<'a>> {
        let optional = OptionalMetaExtractor::new(table_map.iter_optional_meta())?;
        let mut signedness = optional.iter_signedness();
        let mut columns = Vec::with_capacity(table_map.columns_count() as usize);
        for index in 0..table_map.columns_count() as usize {
            let column_type = match table_map.get_column_type(index) {
                Ok(Some(column_type)) => column_type,
                Ok(None) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "No column type"))
                }
                Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
            };
            let metadata = table_map.get_column_metadata(index).unwrap_or(&[]);
            let unsigned = column_type
                .is_numeric_type()
                .then(|| signedness.next())
                .flatten()
                .unwrap_or_default();
            columns.push((column_type, metadata, unsigned));
        }
        Ok(Layout { columns })
    }
}

/// Every row of a rows event: read from the bytes, or by mysql_common for a partial-update
/// event.
pub(crate) fn images<'a>(
    rows: &'a RowsEventData<'a>,
    table_map: &'a TableMapEvent<'a>,
) -> io::Result<Vec<Images>> {
    if matches!(rows, RowsEventData::PartialUpdateRowsEvent(_)) {
        return by_mysql_common(rows, table_map);
    }
    let read = read_all(rows, table_map);
    // Debug builds (every test run) check each event against mysql_common's own reader.
    #[cfg(debug_assertions)]
    match (&read, &by_mysql_common(rows, table_map)) {
        (Ok(read), Ok(expected)) => assert_eq!(
            read, expected,
            "a rows event read differently from mysql_common's reader"
        ),
        (read, expected) => assert_eq!(
            read.is_ok(),
            expected.is_ok(),
            "a rows event read, or refused, unlike mysql_common's reader"
        ),
    }
    read
}

/// The rows as mysql_common's `BinlogRow` reader gives them.
fn by_mysql_common<'a>(
    rows: &'a RowsEventData<'a>,
    table_map: &'a TableMapEvent<'a>,
) -> io::Result<Vec<Images>> {
    rows.rows(table_map)
        .map(|row| {
            row.map(|(before, after)| (before.map(BinlogRow::unwrap), after.map(BinlogRow::unwrap)))
        })
        .collect()
}

fn read_all<'a>(
    rows: &'a RowsEventData<'a>,
    table_map: &'a TableMapEvent<'a>,
) -> io::Result<Vec<Images>> {
    let layout = Layout::of(table_map)?;
    let before: Option<Vec<bool>> = rows
        .columns_before_image()
        .map(|present| present.iter().map(|bit| *bit).collect());
    let after: Option<Vec<bool>> = rows
        .columns_after_image()
        .map(|present| present.iter().map(|bit| *bit).collect());
    let count = rows.num_columns() as usize;
    let mut buffer = ParseBuf(rows.rows_data());
    let mut images = Vec::new();
    while !buffer.is_empty() {
        let before = match &before {
            Some(present) => Some(image(&mut buffer, &layout, present, count)?),
            None => None,
        };
        let after = match &after {
            Some(present) => Some(image(&mut buffer, &layout, present, count)?),
            None => None,
        };
        images.push((before, after));
    }
    Ok(images)
}

/// One image: the null bitmap over the present columns, then their values.
fn image<'a>(
    buffer: &mut ParseBuf<'a>,
    layout: &Layout<'a>,
    present: &[bool],
    count: usize,
) -> io::Result<Vec<BinlogValue<'static>>> {
    // Counted over the whole bitmap, as mysql_common counts it.
    let present_count = present.iter().filter(|bit| **bit).count();
    let nulls: &[u8] = buffer.parse(present_count.div_ceil(8))?;
    let mut values = Vec::with_capacity(present_count);
    let mut position = 0;
    for index in 0..count {
        if !present.get(index).copied().unwrap_or(false) {
            continue;
        }
        let null = nulls
            .get(position / 8)
            .is_none_or(|byte| byte >> (position % 8) & 1 == 1);
        position += 1;
        if null {
            values.push(BinlogValue::Value(mysql_async::Value::NULL));
            continue;
        }
        let Some(&(column_type, metadata, unsigned)) = layout.columns.get(index) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a row image has more columns than its table map",
            ));
        };
        let value: BinlogValue<'_> = buffer.parse((column_type, metadata, unsigned, false))?;
        values.push(value.into_owned());
    }
    Ok(values)
}
