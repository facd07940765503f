//! A row text that MySQL and PostgreSQL compute identically, for verifying a MySQL database
//! against the PostgreSQL copy ferry made of it (the mapping of docs/mysql.md). Pure.
//!
//! Each MySQL column gets a pair of SQL expressions, one per engine, that render the same value
//! as the same text: integers, decimals and dates as themselves, DATETIME/TIMESTAMP with six
//! fractional digits (TIMESTAMP in UTC), TIME as signed microseconds, BIT as binary digits,
//! FLOAT/DOUBLE as the double's text in MySQL's form, and text, ENUM/SET, JSON and bytes as the
//! MD5 of their UTF-8 (or raw) bytes. Text keys are quoted in key texts. NULL is `-`. Both engines then hash the comma-joined text with
//! MD5 and digest it the same way, so the verification engine can compare the two sides like any
//! other pair.

use ferry_core::connector::PortableText;
use ferry_core::schema::Column;
use ferry_core::TableSchema;

use crate::mysql::catalog_kind;
use crate::mysql::types::Kind;

/// The two renderings of one column.
pub struct Rendering {
    pub mysql: String,
    pub postgres: String,
}

fn mysql_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn postgres_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The renderings of a column's values (of a MySQL or a PostgreSQL source table), or why there
/// is none.
pub fn column(column: &Column, dialect: &str) -> Result<Rendering, String> {
    if dialect == "postgres" {
        postgres_column(column)
    } else {
        mysql_column(column)
    }
}

/// The double's text as MySQL writes it, computed by PostgreSQL from `value` (a float8).
fn postgres_double(value: &str) -> String {
    format!(
        "CASE WHEN {value} = 0 THEN '0' \
         WHEN abs({value}) >= 1e-15::float8 AND (abs({value}) < 1e15::float8 OR {value} <> trunc({value})) \
         THEN {value}::text::numeric::text \
         ELSE regexp_replace(replace({value}::text, 'e+', 'e'), 'e(-?)0+([0-9])', E'e\\\\1\\\\2') END"
    )
}

/// The renderings of a PostgreSQL column copied to MySQL (`mysql::ddl::from_postgres`).
fn postgres_column(column: &Column) -> Result<Rendering, String> {
    let (m, p) = (mysql_ident(&column.name), postgres_ident(&column.name));
    let native = column.native_type.as_str();
    let base = native.split('(').next().unwrap_or(native).trim();
    let text = || {
        (
            format!("MD5(CONVERT({m} USING utf8mb4))"),
            format!("md5(convert_to({p}::text, 'UTF8'))"),
        )
    };
    let (mysql, postgres) = if column.user_defined_type || native.ends_with("[]") {
        text()
    } else {
        match base {
            "smallint" | "integer" | "bigint" | "numeric" | "date" => {
                (format!("CAST({m} + 0 AS CHAR)"), format!("{p}::text"))
            }
            "boolean" => (
                format!("CAST({m} + 0 AS CHAR)"),
                format!("CASE WHEN {p} THEN '1' WHEN NOT {p} THEN '0' END"),
            ),
            "real" | "double precision" => (
                format!("CAST({m} + 0E0 AS CHAR)"),
                postgres_double(&format!("{p}::float8")),
            ),
            "text" | "character varying" | "citext" | "name" | "character" | "bpchar" | "uuid"
            | "json" | "jsonb" | "interval" | "inet" | "cidr" | "macaddr" | "macaddr8" | "xml"
            | "tsvector" | "point" => text(),
            "bytea" => (format!("MD5({m})"), format!("md5({p})")),
            "timestamp without time zone" | "timestamp" => (
                format!("DATE_FORMAT({m}, '%Y-%m-%d %H:%i:%s.%f')"),
                format!("to_char({p}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            ),
            "timestamp with time zone" | "timestamptz" => (
                format!("DATE_FORMAT({m}, '%Y-%m-%d %H:%i:%s.%f')"),
                format!("to_char({p} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"),
            ),
            "time without time zone" | "time" => (
                format!("CAST(IF({m} < 0, -1, 1) * ((HOUR({m}) * 3600 + MINUTE({m}) * 60 + SECOND({m})) * 1000000 + MICROSECOND({m})) AS CHAR)"),
                format!("trunc(extract(epoch FROM {p}) * 1000000)::text"),
            ),
            "bit" => {
                let width = ferry_sql::syntax::modifier(native).unwrap_or("1");
                (format!("LPAD(BIN({m}), {width}, '0')"), format!("{p}::text"))
            }
            other => {
                return Err(format!(
                    "{}: type {other} cannot be compared across engines",
                    column.name
                ))
            }
        }
    };
    Ok(Rendering {
        mysql: format!("IFNULL({mysql}, '-')"),
        postgres: format!("COALESCE({postgres}, '-')"),
    })
}

/// The renderings of a MySQL column copied to PostgreSQL (`postgres::translate`).
fn mysql_column(column: &Column) -> Result<Rendering, String> {
    let (m, p) = (mysql_ident(&column.name), postgres_ident(&column.name));
    let (mysql, postgres) = match catalog_kind(column) {
        // `+ 0` drops ZEROFILL padding and keeps a DECIMAL's scale.
        Kind::Integer { .. } | Kind::Decimal => {
            (format!("CAST({m} + 0 AS CHAR)"), format!("{p}::text"))
        }
        Kind::Date => (format!("CAST({m} AS CHAR)"), format!("{p}::text")),
        Kind::Year => (format!("CAST({m} + 0 AS CHAR)"), format!("{p}::text")),
        // The double's text as MySQL writes it: plain decimals from 1e-15 up to 1e15 (and
        // beyond for non-integers), exponent form (`1e-16`, `1e15`) elsewhere, `0` for -0.
        // PostgreSQL's shortest text has the same digits; only the form differs.
        Kind::Float | Kind::Double => (
            format!("CAST({m} + 0E0 AS CHAR)"),
            postgres_double(&format!("{p}::float8")),
        ),
        // Text, labels and JSON as the MD5 of their UTF-8 bytes (whatever the database encoding).
        Kind::Text { .. } | Kind::Json | Kind::Enum { .. } | Kind::Set { .. } => (
            format!("MD5(CONVERT({m} USING utf8mb4))"),
            format!("md5(convert_to({p}::text, 'UTF8'))"),
        ),
        Kind::Binary { .. } => (format!("MD5({m})"), format!("md5({p})")),
        // The SRID and the MD5 of the WKB: MySQL stores the SRID in 4 bytes before the WKB,
        // PostGIS gives the same WKB little-endian (which MySQL writes).
        Kind::Spatial => (
            format!("CONCAT(ST_SRID({m}), ':', MD5(SUBSTRING({m}, 5)))"),
            format!("public.st_srid({p})::text || ':' || md5(public.st_asbinary({p}, 'NDR'))"),
        ),
        Kind::Bit { width } => (format!("LPAD(BIN({m}), {width}, '0')"), format!("{p}::text")),
        Kind::DateTime => (
            format!("DATE_FORMAT({m}, '%Y-%m-%d %H:%i:%s.%f')"),
            format!("to_char({p}, 'YYYY-MM-DD HH24:MI:SS.US')"),
        ),
        Kind::Timestamp => (
            format!("DATE_FORMAT({m}, '%Y-%m-%d %H:%i:%s.%f')"),
            format!("to_char({p} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"),
        ),
        Kind::Time => (
            format!("CAST(IF({m} < 0, -1, 1) * ((HOUR({m}) * 3600 + MINUTE({m}) * 60 + SECOND({m})) * 1000000 + MICROSECOND({m})) AS CHAR)"),
            format!("trunc(extract(epoch FROM {p}) * 1000000)::text"),
        ),
        Kind::Unsupported(name) => {
            return Err(format!("{}: type {name} cannot be compared across engines", column.name))
        }
    };
    Ok(Rendering {
        mysql: format!("IFNULL({mysql}, '-')"),
        postgres: format!("COALESCE({postgres}, '-')"),
    })
}

/// The renderings of a whole row (every column, comma-joined).
pub fn row(table: &TableSchema) -> Result<Rendering, String> {
    join(
        table
            .columns
            .iter()
            .map(|part| column(part, &table.dialect)),
    )
}

/// The renderings of a row's key, readable in reports: text keys as their text, bytes as hex.
pub fn key(table: &TableSchema) -> Result<Rendering, String> {
    join(table.primary_key.iter().map(|name| {
        let column = table
            .column(name)
            .ok_or_else(|| format!("key column {name} is missing"))?;
        let (m, p) = (mysql_ident(name), postgres_ident(name));
        let kind = if table.dialect == "postgres" {
            postgres_key_kind(column)
        } else {
            catalog_kind(column)
        };
        match kind {
            // Quoted, so `('a,b', 'c')` and `('a', 'b,c')` stay apart.
            Kind::Text { .. } | Kind::Enum { .. } | Kind::Set { .. } => Ok(Rendering {
                mysql: format!(
                    "CONCAT('''', REPLACE(CONVERT({m} USING utf8mb4), '''', ''''''), '''')"
                ),
                postgres: format!("'''' || replace({p}::text, '''', '''''') || ''''"),
            }),
            Kind::Binary { .. } => Ok(Rendering {
                mysql: format!("LOWER(HEX({m}))"),
                postgres: format!("encode({p}, 'hex')"),
            }),
            _ => crate::portable::column(column, &table.dialect),
        }
    }))
}

/// How a PostgreSQL key column is shown in key texts: text-like keys quoted, bytes as hex.
fn postgres_key_kind(column: &Column) -> Kind {
    let base = column
        .native_type
        .split('(')
        .next()
        .unwrap_or_default()
        .trim();
    match base {
        "bytea" => Kind::Binary { fixed: None },
        "smallint"
        | "integer"
        | "bigint"
        | "numeric"
        | "date"
        | "boolean"
        | "real"
        | "double precision"
        | "timestamp without time zone"
        | "timestamp with time zone"
        | "time without time zone"
        | "bit" => Kind::Unsupported(String::new()),
        _ => Kind::Text {
            charset: "utf8mb4".into(),
        },
    }
}

fn join(parts: impl Iterator<Item = Result<Rendering, String>>) -> Result<Rendering, String> {
    let parts: Vec<Rendering> = parts.collect::<Result<_, _>>()?;
    let mysql: Vec<&str> = parts.iter().map(|part| part.mysql.as_str()).collect();
    let postgres: Vec<&str> = parts.iter().map(|part| part.postgres.as_str()).collect();
    Ok(Rendering {
        mysql: format!("CONCAT_WS(',', {})", mysql.join(", ")),
        postgres: format!("concat_ws(',', {})", postgres.join(", ")),
    })
}

/// PostgreSQL's bucket of a key text, equal to MySQL's for the same text.
pub fn postgres_bucket(key_text: &str, count: u32) -> String {
    format!(
        "((('x' || substr(md5(convert_to({key_text}, 'UTF8')), 1, 8))::bit(32)::bigint) % {count})::integer"
    )
}

/// MySQL's bucket of a key text.
pub fn mysql_bucket(key_text: &str, count: u32) -> String {
    format!("CAST(CONV(SUBSTRING(MD5({key_text}), 1, 8), 16, 10) AS UNSIGNED) % {count}")
}

/// The MySQL half of the pair's rendering, for a MySQL inspector's portable mode.
pub struct MysqlText;

impl PortableText for MysqlText {
    fn row(&self, table: &TableSchema) -> Result<String, String> {
        row(table).map(|rendering| rendering.mysql)
    }

    fn key(&self, table: &TableSchema) -> Result<String, String> {
        key(table).map(|rendering| rendering.mysql)
    }

    fn bucket(&self, key_text: &str, count: u32) -> String {
        mysql_bucket(key_text, count)
    }
}

/// The PostgreSQL half of the pair's rendering, for a PostgreSQL inspector's portable mode.
pub struct PostgresText;

impl PortableText for PostgresText {
    fn row(&self, table: &TableSchema) -> Result<String, String> {
        row(table).map(|rendering| rendering.postgres)
    }

    fn key(&self, table: &TableSchema) -> Result<String, String> {
        key(table).map(|rendering| rendering.postgres)
    }

    fn bucket(&self, key_text: &str, count: u32) -> String {
        postgres_bucket(key_text, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column_of(name: &str, native_type: &str) -> Column {
        Column {
            type_signature: None,
            name: name.into(),
            native_type: native_type.into(),
            user_defined_type: false,
            nullable: true,
            default: None,
            identity: None,
            generated: None,
            collation: Some("utf8mb4_general_ci".into()),
            on_update: None,
            generated_virtual: false,
            comment: None,
        }
    }

    #[test]
    fn every_mapped_type_renders_on_both_engines_and_unknown_types_are_refused() {
        for native_type in [
            "int(11)",
            "bigint(20) unsigned",
            "decimal(65,30)",
            "float",
            "double",
            "varchar(10)",
            "longblob",
            "bit(12)",
            "enum('a','b')",
            "set('x','y')",
            "date",
            "datetime(6)",
            "timestamp(6)",
            "time(6)",
            "year(4)",
            "json",
        ] {
            let rendering = column(&column_of("c`1", native_type), "mysql").unwrap();
            assert!(
                rendering.mysql.starts_with("IFNULL(") && rendering.mysql.contains("`c``1`"),
                "{native_type}"
            );
            assert!(
                rendering.postgres.starts_with("COALESCE(")
                    && rendering.postgres.contains("\"c`1\""),
                "{native_type}"
            );
        }
        // (Spatial values are bytes to MySQL; across engines the target refuses the type.)
        assert!(column(&column_of("shape", "vector(3)"), "mysql").is_err());
        for native_type in [
            "integer",
            "numeric(30,10)",
            "boolean",
            "real",
            "text",
            "uuid",
            "jsonb",
            "bytea",
            "timestamp with time zone",
            "interval",
            "time without time zone",
            "bit(5)",
            "integer[]",
        ] {
            assert!(
                column(&column_of("c", native_type), "postgres").is_ok(),
                "{native_type}"
            );
        }
        assert!(column(&column_of("c", "money"), "postgres").is_err());
    }

    #[test]
    fn buckets_take_the_same_32_bits_on_both_engines() {
        assert_eq!(
            mysql_bucket("k", 256),
            "CAST(CONV(SUBSTRING(MD5(k), 1, 8), 16, 10) AS UNSIGNED) % 256"
        );
        assert!(postgres_bucket("k", 256)
            .contains("substr(md5(convert_to(k, 'UTF8')), 1, 8))::bit(32)::bigint"));
    }
}
