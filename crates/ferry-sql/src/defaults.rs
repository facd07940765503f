//! Column defaults across engines: the common ones (literals, the current time and date, bits,
//! booleans) in the other dialect, so applications that leave a column out of an INSERT keep
//! working after the switch. Anything else (function calls, arbitrary expressions) is not
//! translated and the column has no default on the target. Pure.

/// A SQL string literal `'...'` (quotes doubled inside) at the start of `text`, and the rest.
fn string_literal(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'\'') {
        return None;
    }
    let mut index = 1;
    while index < bytes.len() {
        if bytes[index] == b'\'' {
            if bytes.get(index + 1) == Some(&b'\'') {
                index += 2;
                continue;
            }
            return Some((&text[..=index], &text[index + 1..]));
        }
        index += 1;
    }
    None
}

fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    !whole.is_empty()
        && whole.bytes().all(|byte| byte.is_ascii_digit())
        && fraction.is_none_or(|fraction| fraction.bytes().all(|byte| byte.is_ascii_digit()))
}

/// Removes one pair of enclosing parentheses (`(0)`, MySQL 8's `(now())`).
fn unwrap_parentheses(text: &str) -> &str {
    match text
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
    {
        Some(inner) if inner.matches('(').count() == inner.matches(')').count() => inner.trim(),
        _ => text,
    }
}

fn is_current_timestamp(lower: &str) -> bool {
    let name = lower.split('(').next().unwrap_or_default().trim();
    matches!(
        name,
        "current_timestamp"
            | "now"
            | "localtimestamp"
            | "localtime"
            | "statement_timestamp"
            | "transaction_timestamp"
    ) && (lower == name || lower.ends_with(')'))
}

/// A MySQL default (as ferry's catalog holds it: `'text'`, `0`, `NULL`, `current_timestamp()`,
/// `b'101'`, MySQL 8's `(expression)`) for a PostgreSQL column of type `postgres_type`.
pub fn mysql_to_postgres(default: &str, postgres_type: &str) -> Option<String> {
    let text = unwrap_parentheses(default.trim());
    let lower = text.to_ascii_lowercase();
    if lower == "null" {
        return None;
    }
    if postgres_type.starts_with("bit") {
        // MySQL shows b'101' without leading zeros; bit(n) needs exactly n digits.
        let bits = lower.strip_prefix("b'")?.strip_suffix('\'')?;
        let width: usize = crate::syntax::modifier(postgres_type)?.parse().ok()?;
        return (bits.bytes().all(|byte| byte == b'0' || byte == b'1') && bits.len() <= width)
            .then(|| format!("B'{bits:0>width$}'"));
    }
    if is_number(text) {
        return Some(text.to_string());
    }
    if let Some((literal, "")) = string_literal(text) {
        // Zero dates have no PostgreSQL value, and MySQL may hold backslash escapes.
        if literal.contains("0000-00-00") || literal.contains('\\') {
            return None;
        }
        return Some(literal.to_string());
    }
    if is_current_timestamp(&lower) {
        return Some(
            if postgres_type.contains("with time zone") {
                "CURRENT_TIMESTAMP"
            } else {
                "LOCALTIMESTAMP"
            }
            .into(),
        );
    }
    if matches!(
        lower.as_str(),
        "curdate()" | "current_date" | "current_date()"
    ) {
        return Some("CURRENT_DATE".into());
    }
    None
}

/// A PostgreSQL default (as `pg_get_expr` renders it: `'text'::character varying`, `0`,
/// `(-1)`, `true`, `now()`, `CURRENT_TIMESTAMP`) for a MySQL column of type `mysql_type`
/// (`VARCHAR(20) ...`, `DATETIME(6)`) translated from `postgres_type`; `mariadb` allows
/// literal defaults on TEXT and BLOB. String literals are kept only for text, numbers and plain
/// dates and times (no backslashes: MySQL would read them as escapes), and the current time
/// only for `timestamp without time zone` (ferry stores timestamptz values in UTC, which MySQL's
/// CURRENT_TIMESTAMP is not).
pub fn postgres_to_mysql(
    default: &str,
    mysql_type: &str,
    postgres_type: &str,
    mariadb: bool,
) -> Option<String> {
    let text = unwrap_parentheses(default.trim());
    let lower = text.to_ascii_lowercase();
    let upper_type = mysql_type.to_ascii_uppercase();
    let base = upper_type.split(['(', ' ']).next().unwrap_or_default();
    if lower.starts_with("nextval(") || lower.starts_with("null") {
        return None;
    }
    let literal = if is_number(text) {
        Some(text.to_string())
    } else if lower == "true" || lower == "false" {
        Some(if lower == "true" { "1" } else { "0" }.to_string())
    } else if let Some((literal, rest)) = string_literal(text) {
        // Only casts may follow the literal: `'a'::text`, `'1'::integer`.
        let casts_only = rest.is_empty()
            || rest.split("::").skip(1).all(|cast| {
                !cast.is_empty()
                    && cast
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b" _.\"[]".contains(&byte))
            }) && rest.starts_with("::");
        (casts_only && !rest.contains("[]")).then(|| literal.to_string())
    } else {
        None
    };
    if let Some(literal) = literal {
        let text_like = matches!(
            base,
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
        );
        let numeric = matches!(
            base,
            "TINYINT" | "SMALLINT" | "INT" | "BIGINT" | "DECIMAL" | "FLOAT" | "DOUBLE"
        );
        let plain_time = matches!(base, "DATE" | "DATETIME" | "TIME")
            && !postgres_type.contains("with time zone")
            && literal
                .bytes()
                .all(|byte| byte.is_ascii_digit() || b"'-: .".contains(&byte));
        let number_text = literal
            .trim_matches('\'')
            .parse::<f64>()
            .is_ok_and(f64::is_finite);
        if literal.contains('\\') || !(text_like || plain_time || (numeric && number_text)) {
            return None;
        }
        let long = matches!(
            base,
            "TINYTEXT"
                | "TEXT"
                | "MEDIUMTEXT"
                | "LONGTEXT"
                | "TINYBLOB"
                | "BLOB"
                | "MEDIUMBLOB"
                | "LONGBLOB"
                | "JSON"
        );
        return Some(if long && !mariadb {
            format!("({literal})")
        } else {
            literal
        });
    }
    if is_current_timestamp(&lower)
        && matches!(base, "DATETIME" | "TIMESTAMP")
        && !postgres_type.contains("with time zone")
    {
        let precision = upper_type
            .split_once('(')
            .and_then(|(_, rest)| rest.split(')').next())
            .filter(|inside| inside.bytes().all(|byte| byte.is_ascii_digit()));
        return Some(match precision {
            Some(precision) => format!("CURRENT_TIMESTAMP({precision})"),
            None => "CURRENT_TIMESTAMP".into(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_defaults_become_postgres_defaults() {
        let to_postgres = |default, kind| mysql_to_postgres(default, kind);
        assert_eq!(to_postgres("'it''s'", "text").as_deref(), Some("'it''s'"));
        assert_eq!(to_postgres("0", "integer").as_deref(), Some("0"));
        assert_eq!(
            to_postgres("-1.50", "numeric(8,2)").as_deref(),
            Some("-1.50")
        );
        assert_eq!(to_postgres("NULL", "text"), None);
        assert_eq!(to_postgres("b'101'", "bit(3)").as_deref(), Some("B'101'"));
        assert_eq!(
            to_postgres("b'101'", "bit(8)").as_deref(),
            Some("B'00000101'")
        );
        assert_eq!(
            to_postgres("current_timestamp(6)", "timestamp(6) with time zone").as_deref(),
            Some("CURRENT_TIMESTAMP")
        );
        assert_eq!(
            to_postgres("(now())", "timestamp(0) without time zone").as_deref(),
            Some("LOCALTIMESTAMP")
        );
        assert_eq!(to_postgres("'0000-00-00'", "date"), None);
        assert_eq!(to_postgres("uuid()", "text"), None);
        assert_eq!(to_postgres("'a\\\\b'", "text"), None);
    }

    #[test]
    fn postgres_defaults_become_mysql_defaults() {
        let to_mysql = |default, kind: &str| {
            let postgres = if kind.starts_with("DATETIME") {
                "timestamp without time zone"
            } else {
                "text"
            };
            postgres_to_mysql(default, kind, postgres, true)
        };
        assert_eq!(
            to_mysql("'new'::character varying", "VARCHAR(20)").as_deref(),
            Some("'new'")
        );
        assert_eq!(
            to_mysql("'it''s'::text", "LONGTEXT").as_deref(),
            Some("'it''s'")
        );
        assert_eq!(
            postgres_to_mysql("'x'::text", "LONGTEXT", "text", false).as_deref(),
            Some("('x')")
        );
        assert_eq!(to_mysql("(-1)", "INT").as_deref(), Some("-1"));
        assert_eq!(to_mysql("true", "TINYINT(1)").as_deref(), Some("1"));
        assert_eq!(
            to_mysql("now()", "DATETIME(6)").as_deref(),
            Some("CURRENT_TIMESTAMP(6)")
        );
        assert_eq!(
            to_mysql("CURRENT_TIMESTAMP", "TIMESTAMP").as_deref(),
            Some("CURRENT_TIMESTAMP")
        );
        assert_eq!(to_mysql("nextval('t_id_seq'::regclass)", "BIGINT"), None);
        assert_eq!(to_mysql("gen_random_uuid()", "CHAR(36)"), None);
        assert_eq!(to_mysql("'{}'::integer[]", "JSON"), None);
        assert_eq!(to_mysql("('a'::text || 'b'::text)", "LONGTEXT"), None);
        assert_eq!(to_mysql("'C:\\temp'::text", "LONGTEXT"), None);
        assert_eq!(to_mysql("'\\x0102'::bytea", "LONGBLOB"), None);
        assert_eq!(
            postgres_to_mysql("now()", "DATETIME(6)", "timestamp with time zone", true),
            None
        );
        assert_eq!(
            postgres_to_mysql(
                "'2020-01-01 00:00:00+00'::timestamp with time zone",
                "DATETIME(6)",
                "timestamp with time zone",
                true
            ),
            None
        );
        assert_eq!(
            to_mysql(
                "'2020-01-01 10:00:00'::timestamp without time zone",
                "DATETIME(6)"
            )
            .as_deref(),
            Some("'2020-01-01 10:00:00'")
        );
        assert_eq!(to_mysql("'NaN'::numeric", "DECIMAL(8,2)"), None);
    }
}
