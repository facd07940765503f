//! Column types widened on the source, widened on a PostgreSQL target.
//!
//! A type is *widened* when every value of the old type is a value of the new one, unchanged and
//! written the same: a larger integer, an integer into a numeric with room for its digits, more
//! digits or scale, a longer or unbounded text, more fractional seconds, real into double
//! precision, the same for arrays of these. Only such changes are followed (`ALTER COLUMN ...
//! TYPE`, which converts the target's existing values as the source converted its own); any
//! other change of a source column's type while streaming stops the table
//! (`stream.column_retyped`); differences between the target's type and the source's that the
//! mapping between engines makes are left alone.

use ferry_core::{Result, TableSchema};
use tokio_postgres::Client;
use tracing::info;

use super::ddl::{ident, qualified};
use super::errors::classify;

/// A type written as `format_type` writes it, whatever alias it came as.
pub(super) fn canonical(type_name: &str) -> String {
    let lower = type_name.trim().to_ascii_lowercase();
    if let Some(element) = lower.strip_suffix("[]") {
        return format!("{}[]", canonical(element));
    }
    let (base, arguments) = match lower.find('(') {
        Some(open) => {
            let close = lower.rfind(')').unwrap_or(lower.len());
            let rest = lower[close.min(lower.len())..]
                .trim_start_matches(')')
                .trim();
            (
                format!("{} {rest}", lower[..open].trim())
                    .trim()
                    .to_string(),
                Some(lower[open + 1..close.max(open + 1)].replace(' ', "")),
            )
        }
        None => (lower.clone(), None),
    };
    let base = match base.as_str() {
        "int2" => "smallint",
        "int" | "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" | "float" => "double precision",
        "decimal" => "numeric",
        "varchar" => "character varying",
        "char" | "bpchar" => "character",
        "varbit" => "bit varying",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "time" => "time without time zone",
        "timetz" => "time with time zone",
        "bool" => "boolean",
        other => other,
    }
    .to_string();
    match arguments {
        // format_type puts the precision of the time types inside their name.
        Some(arguments) if base.starts_with("timestamp ") || base.starts_with("time ") => {
            let (head, tail) = base.split_once(' ').unwrap_or((&base, ""));
            format!("{head}({arguments}) {tail}")
        }
        Some(arguments) => format!("{base}({arguments})"),
        None => base,
    }
}

/// The name without arguments, and the arguments.
fn parts(canonical: &str) -> (String, Vec<i64>) {
    match canonical.find('(') {
        Some(open) => {
            let close = canonical[open..]
                .find(')')
                .map_or(canonical.len(), |close| open + close);
            let arguments = canonical[open + 1..close]
                .split(',')
                .filter_map(|part| part.trim().parse().ok())
                .collect();
            let name = format!(
                "{}{}",
                &canonical[..open],
                &canonical[(close + 1).min(canonical.len())..]
            );
            (name, arguments)
        }
        None => (canonical.to_string(), Vec::new()),
    }
}

/// Decimal digits an integer type needs.
fn integer_digits(name: &str) -> Option<i64> {
    match name {
        "smallint" => Some(5),
        "integer" => Some(10),
        "bigint" => Some(19),
        _ => None,
    }
}

/// Whether every value of type `from` is, unchanged, a value of type `to` (both canonical).
pub(super) fn widens(from: &str, to: &str) -> bool {
    if from == to {
        return false;
    }
    if let (Some(from), Some(to)) = (from.strip_suffix("[]"), to.strip_suffix("[]")) {
        return widens(from, to);
    }
    let (from_name, from_arguments) = parts(from);
    let (to_name, to_arguments) = parts(to);
    match (from_name.as_str(), to_name.as_str()) {
        (from_integer, to_integer)
            if integer_digits(from_integer).is_some() && integer_digits(to_integer).is_some() =>
        {
            integer_digits(to_integer) > integer_digits(from_integer)
        }
        (from_integer, "numeric") if integer_digits(from_integer).is_some() => {
            match to_arguments.as_slice() {
                [] => true,
                [precision] => *precision >= integer_digits(from_integer).unwrap_or(i64::MAX),
                [precision, scale] => {
                    precision - scale >= integer_digits(from_integer).unwrap_or(i64::MAX)
                }
                _ => false,
            }
        }
        ("real", "double precision") => true,
        ("numeric", "numeric") => match (from_arguments.as_slice(), to_arguments.as_slice()) {
            (_, []) => true,
            ([precision], [to_precision]) => to_precision >= precision,
            ([precision], [to_precision, to_scale]) => to_precision - to_scale >= *precision,
            ([precision, scale], [to_precision]) => *scale == 0 && to_precision >= precision,
            ([precision, scale], [to_precision, to_scale]) => {
                to_scale >= scale && to_precision - to_scale >= precision - scale
            }
            _ => false,
        },
        ("character varying", "character varying") | ("bit varying", "bit varying") => {
            match (from_arguments.as_slice(), to_arguments.as_slice()) {
                (_, []) => true,
                ([length], [to_length]) => to_length >= length,
                _ => false,
            }
        }
        ("character varying", "text") | ("text", "character varying") => to_arguments.is_empty(),
        (
            "timestamp without time zone"
            | "timestamp with time zone"
            | "time without time zone"
            | "time with time zone",
            _,
        ) if from_name == to_name => {
            // No precision means 6, the most.
            let precision = |arguments: &[i64]| arguments.first().copied().unwrap_or(6);
            precision(&to_arguments) > precision(&from_arguments)
        }
        _ => false,
    }
}

/// Widens the target's columns as `table` (translated to PostgreSQL) says the source has them;
/// `previous` (translated too) is the definition followed until now.
pub(super) async fn widen_columns(
    client: &Client,
    previous: Option<&TableSchema>,
    table: &TableSchema,
) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            &[&qualified(&table.name)],
        )
        .await
        .map_err(|error| {
            classify(
                error,
                &format!("reading the column types of {} on the target", table.name),
            )
        })?;
    let mut clauses = Vec::new();
    let mut widened = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let target_type: String = row.get(1);
        let Some(column) = table.column(&name) else {
            continue;
        };
        let (target, now) = (canonical(&target_type), canonical(&column.native_type));
        // A type the source changed while the stream followed it must be a widening.
        if let Some(before) = previous
            .and_then(|previous| previous.column(&name))
            .map(|before| canonical(&before.native_type))
            .filter(|before| *before != now)
        {
            if !widens(&before, &now) {
                return Err(ferry_sql::widening::column_retyped(
                    &table.name,
                    &name,
                    &before,
                    &now,
                ));
            }
        }
        if target == now || !widens(&target, &now) {
            // The same, or a difference the mapping between engines makes.
            continue;
        }
        let mut clause = format!("ALTER COLUMN {} TYPE {}", ident(&name), column.native_type);
        if let Some(collation) = &column.collation {
            clause.push_str(&format!(" COLLATE {collation}"));
        }
        clauses.push(clause);
        widened.push(name);
    }
    if clauses.is_empty() {
        return Ok(widened);
    }
    // A lock the ALTER cannot get soon fails (and is retried) rather than queueing every reader
    // of the table behind it.
    let statement = format!(
        "SET lock_timeout = '30s'; ALTER TABLE {} {}; RESET lock_timeout",
        qualified(&table.name),
        clauses.join(", ")
    );
    client.batch_execute(&statement).await.map_err(|error| {
        classify(error, &format!("widening columns of {} on the target", table.name))
            .with_hint("widen the columns on the target by hand as the source has them (a view over a column blocks it), then run ferry again")
    })?;
    info!(table = %table.name, columns = ?widened, "widened on the target");
    Ok(widened)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widen(from: &str, to: &str) -> bool {
        widens(&canonical(from), &canonical(to))
    }

    #[test]
    fn aliases_read_as_format_type_writes_them() {
        assert_eq!(canonical("VARCHAR(64)"), "character varying(64)");
        assert_eq!(canonical("int8"), "bigint");
        assert_eq!(canonical("numeric(20, 6)"), "numeric(20,6)");
        assert_eq!(canonical("timestamp(3)"), "timestamp(3) without time zone");
        assert_eq!(
            canonical("timestamp(3) without time zone"),
            "timestamp(3) without time zone"
        );
        assert_eq!(canonical("timestamptz"), "timestamp with time zone");
        assert_eq!(canonical("int4[]"), "integer[]");
        assert_eq!(canonical("character varying(8)"), "character varying(8)");
        // Malformed names never panic.
        for odd in ["a)b(c", "(", ")", "numeric(", "x(1,2", "[]"] {
            let _ = widens(&canonical(odd), &canonical("numeric(3)"));
        }
    }

    #[test]
    fn only_changes_that_keep_every_value_are_widenings() {
        for (from, to) in [
            ("integer", "bigint"),
            ("smallint", "integer"),
            ("integer", "numeric"),
            ("integer", "numeric(12,2)"),
            ("bigint", "numeric(19)"),
            ("numeric(6,2)", "numeric(20,6)"),
            ("numeric(6,2)", "numeric"),
            ("character varying(8)", "character varying(64)"),
            ("character varying(8)", "text"),
            ("character varying(8)", "character varying"),
            ("real", "double precision"),
            (
                "timestamp(3) without time zone",
                "timestamp without time zone",
            ),
            ("integer[]", "bigint[]"),
            ("bit varying(3)", "bit varying(9)"),
        ] {
            assert!(widen(from, to), "{from} -> {to}");
        }
        for (from, to) in [
            ("bigint", "integer"),
            ("integer", "integer"),
            ("integer", "numeric(9,0)"),
            ("integer", "numeric(12,4)"),
            ("numeric(6,2)", "numeric(6,1)"),
            ("numeric(6,2)", "numeric(7,4)"),
            ("character varying(64)", "character varying(8)"),
            ("text", "character varying(10)"),
            ("integer", "text"),
            ("double precision", "real"),
            ("timestamp without time zone", "timestamp with time zone"),
            (
                "timestamp without time zone",
                "timestamp(3) without time zone",
            ),
            ("character(4)", "character varying(8)"),
            ("integer", "bigint[]"),
        ] {
            assert!(!widen(from, to), "{from} -> {to}");
        }
    }
}
