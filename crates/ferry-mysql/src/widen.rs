//! Column types widened on the source, on MySQL and MariaDB: which changes are widenings (for the
//! stream's ALTER follower and for a MySQL target), and widening a MySQL target's columns.
//!
//! A type is *widened* when every value of the old type is a value of the new one, unchanged: a
//! larger integer (never a signed one into unsigned), more DECIMAL digits or scale, FLOAT into
//! DOUBLE, a longer VARCHAR/VARBINARY or a larger TEXT/BLOB, more fractional seconds. Character
//! sets and collations must stay the same (the ALTER follower compares the rest of the column:
//! collation, generated expression, nullability, AUTO_INCREMENT).

use ferry_core::schema::Catalog;
use ferry_core::{Result, TableSchema};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tracing::{debug, info};

use super::ddl::{column_definition, ident, target_type, Flavor};
use super::errors::classify;

/// `int(11) unsigned` -> (`int`, [11], unsigned); lower case, display widths kept apart.
fn parts(type_name: &str) -> (String, Vec<i64>, bool) {
    let lower = type_name.trim().to_ascii_lowercase();
    let unsigned = lower.contains(" unsigned");
    let head = lower
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    match head.find('(') {
        Some(open) => {
            let close = head[open..]
                .find(')')
                .map_or(head.len(), |close| open + close);
            let arguments = head[open + 1..close]
                .split(',')
                .filter_map(|part| part.trim().parse().ok())
                .collect();
            (head[..open].to_string(), arguments, unsigned)
        }
        None => (head, Vec::new(), unsigned),
    }
}

/// The range of an integer type.
fn integer_range(name: &str, unsigned: bool) -> Option<(i128, i128)> {
    let bits = match name {
        "tinyint" => 8,
        "smallint" => 16,
        "mediumint" => 24,
        "int" | "integer" => 32,
        "bigint" => 64,
        _ => return None,
    };
    Some(if unsigned {
        (0, (1i128 << bits) - 1)
    } else {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    })
}

/// The size class of the TEXT and BLOB families (and VARCHAR/VARBINARY's byte limit).
fn text_rank(name: &str) -> Option<u8> {
    match name {
        "tinytext" | "tinyblob" => Some(1),
        "text" | "blob" => Some(2),
        "mediumtext" | "mediumblob" => Some(3),
        "longtext" | "longblob" => Some(4),
        _ => None,
    }
}

/// Whether two types are the same integer type written with different display widths
/// (`int(10)` and `int(11)`, `int`): the same values.
pub fn same_integer(from: &str, to: &str) -> bool {
    let (from_name, _, from_unsigned) = parts(from);
    let (to_name, _, to_unsigned) = parts(to);
    integer_range(&from_name, from_unsigned).is_some()
        && from_name == to_name
        && from_unsigned == to_unsigned
        && from.to_ascii_lowercase().contains("zerofill")
            == to.to_ascii_lowercase().contains("zerofill")
}

/// Whether every value of MySQL type `from` is, unchanged, a value of type `to`.
pub fn widens(from: &str, to: &str) -> bool {
    let (from_name, from_arguments, from_unsigned) = parts(from);
    let (to_name, to_arguments, to_unsigned) = parts(to);
    if let (Some(from_range), Some(to_range)) = (
        integer_range(&from_name, from_unsigned),
        integer_range(&to_name, to_unsigned),
    ) {
        return to_range.0 <= from_range.0 && to_range.1 >= from_range.1 && to_range != from_range;
    }
    let decimal = |name: &str| matches!(name, "decimal" | "numeric");
    if let Some((low, high)) = integer_range(&from_name, from_unsigned) {
        if decimal(&to_name) && !(from_unsigned && to_unsigned) {
            let digits = high.max(-low).to_string().len() as i64;
            let (precision, scale) = match to_arguments.as_slice() {
                [] => (10, 0),
                [precision] => (*precision, 0),
                [precision, scale, ..] => (*precision, *scale),
            };
            return precision - scale >= digits && (!to_unsigned || low == 0);
        }
        return false;
    }
    match (from_name.as_str(), to_name.as_str()) {
        (from_decimal, to_decimal) if decimal(from_decimal) && decimal(to_decimal) => {
            if from_unsigned != to_unsigned && to_unsigned {
                return false;
            }
            let split = |arguments: &[i64]| match arguments {
                [] => (10, 0),
                [precision] => (*precision, 0),
                [precision, scale, ..] => (*precision, *scale),
            };
            let (precision, scale) = split(&from_arguments);
            let (to_precision, to_scale) = split(&to_arguments);
            (to_precision, to_scale) != (precision, scale)
                && to_scale >= scale
                && to_precision - to_scale >= precision - scale
        }
        ("float", "double") => from_arguments.is_empty() && to_arguments.is_empty() && !to_unsigned,
        ("varchar", "varchar") | ("varbinary", "varbinary") => {
            matches!((from_arguments.as_slice(), to_arguments.as_slice()), ([length], [to_length]) if to_length > length)
        }
        // VARCHAR(n) holds at most 65,535 bytes: MEDIUMTEXT and LONGTEXT hold every value.
        ("varchar", to_text) => {
            text_rank(to_text).is_some_and(|rank| rank >= 3) && to_text.ends_with("text")
        }
        ("varbinary", to_blob) => {
            text_rank(to_blob).is_some_and(|rank| rank >= 3) && to_blob.ends_with("blob")
        }
        (from_text, to_text) if text_rank(from_text).is_some() && text_rank(to_text).is_some() => {
            from_text.ends_with("text") == to_text.ends_with("text")
                && text_rank(to_text) > text_rank(from_text)
        }
        ("datetime", "datetime") | ("timestamp", "timestamp") | ("time", "time") => {
            let precision = |arguments: &[i64]| arguments.first().copied().unwrap_or(0);
            precision(&to_arguments) > precision(&from_arguments)
        }
        _ => false,
    }
}

/// Widens a MySQL target's columns where `table` (the source's definition) now has a wider type;
/// then lets columns the source dropped take NULL (rows written from now on lack them).
pub async fn widen_columns(
    conn: &mut Conn,
    previous: Option<&TableSchema>,
    table: &TableSchema,
    flavor: Flavor,
) -> Result<Vec<String>> {
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    )> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME, COLUMN_DEFAULT,
                    NULLIF(GENERATION_EXPRESSION, '')
             FROM information_schema.COLUMNS
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table.name.name.clone(),),
        )
        .await
        .map_err(|error| {
            classify(
                error,
                &format!("reading the column types of {} on the target", table.name),
            )
        })?;
    let catalog = Catalog::default();
    let mut clauses = Vec::new();
    let mut widened = Vec::new();
    for (name, target, nullable, collation, default, generated) in &rows {
        let Some(column) = table
            .columns
            .iter()
            .find(|column| column.name.eq_ignore_ascii_case(name))
        else {
            // Dropped on the source: it must take the rows that lack it. (A column with a
            // default takes that; a generated one computes itself.)
            if nullable == "NO" && default.is_none() && generated.is_none() {
                let mut definition = format!("{} {target}", ident(name));
                if let Some(collation) = collation {
                    let charset = collation.split('_').next().unwrap_or(collation);
                    definition.push_str(&format!(" CHARACTER SET {charset} COLLATE {collation}"));
                }
                clauses.push(format!("MODIFY COLUMN {definition} NULL"));
            }
            continue;
        };
        // A type the translation needs the source's catalog for (enums, domains): not widened.
        let Ok(source) = target_type(table, column, &catalog, flavor) else {
            continue;
        };
        // A type the source changed while the stream followed it must be a widening.
        if let Some(before) = previous
            .and_then(|previous| previous.column(&column.name))
            .and_then(|before| target_type(previous?, before, &catalog, flavor).ok())
            .map(|before| before.to_ascii_lowercase())
            .filter(|before| *before != source.to_ascii_lowercase())
        {
            let now = source.to_ascii_lowercase();
            if !same_integer(&before, &now) && !widens(&before, &now) {
                return Err(ferry_sql::widening::column_retyped(
                    &table.name,
                    &column.name,
                    &before,
                    &now,
                ));
            }
        }
        let (from, to) = (target.to_ascii_lowercase(), source.to_ascii_lowercase());
        if from == to || same_integer(&from, &to) {
            // The same (integer display widths differ between servers: int(11) is int).
            continue;
        }
        if widens(&from, &to) {
            clauses.push(format!(
                "MODIFY COLUMN {}",
                column_definition(table, column, &catalog, flavor)?
            ));
            widened.push(column.name.clone());
        } else {
            // Mostly the mapping between engines (a text key as VARCHAR(n), JSON as LONGTEXT).
            debug!(table = %table.name, column = %name, target = %target, source = %source, "the column's type differs between source and target and is not a widening: left as it is");
        }
    }
    if clauses.is_empty() {
        return Ok(widened);
    }
    let _ = conn.query_drop("SET SESSION lock_wait_timeout = 30").await;
    conn.query_drop(format!(
        "ALTER TABLE {} {}",
        ident(&table.name.name),
        clauses.join(", ")
    ))
    .await
    .map_err(|error| {
        classify(
            error,
            &format!("widening columns of {} on the target", table.name),
        )
        .with_hint(
            "change the columns on the target by hand as the source has them, then run ferry again",
        )
    })?;
    if !widened.is_empty() {
        info!(table = %table.name, columns = ?widened, "widened on the target");
    }
    Ok(widened)
}

#[cfg(test)]
mod tests {
    use super::widens;

    #[test]
    fn only_changes_that_keep_every_value_are_widenings() {
        for (from, to) in [
            ("int(11)", "bigint(20)"),
            ("int", "bigint"),
            ("tinyint(3) unsigned", "smallint(6)"),
            ("int unsigned", "bigint"),
            ("int unsigned", "bigint unsigned"),
            ("smallint(6)", "int(11)"),
            ("int", "decimal(12,2)"),
            ("decimal(6,2)", "decimal(20,6)"),
            ("float", "double"),
            ("varchar(8)", "varchar(64)"),
            ("varchar(8)", "mediumtext"),
            ("text", "mediumtext"),
            ("blob", "longblob"),
            ("varbinary(4)", "varbinary(16)"),
            ("datetime", "datetime(6)"),
        ] {
            assert!(widens(from, to), "{from} -> {to}");
        }
        for (from, to) in [
            ("bigint", "int"),
            ("int", "int unsigned"),
            ("int unsigned", "int"),
            ("int", "decimal(9,0)"),
            ("decimal(6,2)", "decimal(6,1)"),
            ("decimal(6,2)", "decimal(7,4)"),
            ("varchar(64)", "varchar(8)"),
            ("varchar(8)", "text"),
            ("text", "blob"),
            ("double", "float"),
            ("datetime(6)", "datetime"),
            ("int", "varchar(20)"),
            ("int", "int"),
        ] {
            assert!(!widens(from, to), "{from} -> {to}");
        }
        // Malformed names never panic.
        for odd in ["a)b(c", "(", ")", "int(", "decimal(1,", ""] {
            let _ = widens(odd, "decimal(3)");
            let _ = widens("int", odd);
        }
    }
}
