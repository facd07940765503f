//! SQL text for MySQL: quoting, table definitions (from MySQL or PostgreSQL definitions) and
//! key-range predicates. Pure functions.
//!
//! A PostgreSQL table becomes a MySQL table of the types in docs/mysql.md. Text compares as
//! bytes (`utf8mb4_nopad_bin` on MariaDB, `utf8mb4_0900_bin` on MySQL), as PostgreSQL's
//! deterministic collations do, so keys distinct on the source never collide on the target.
//! Types without a lossless counterpart are refused before anything is created.

use ferry_core::schema::{Catalog, Identity, UserType, UserTypeKind};
use ferry_core::state::KeyRange;
use ferry_core::{Error, Result, TableSchema, Value};

use super::types::modifier;

/// A quoted identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Which server a definition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    pub mariadb: bool,
}

impl Flavor {
    fn binary_collation(&self) -> &'static str {
        if self.mariadb {
            "utf8mb4_nopad_bin"
        } else {
            "utf8mb4_0900_bin"
        }
    }
}

/// The MySQL column type for a PostgreSQL column, or why there is none. `key_columns` is how
/// many text-like columns share the primary key (MySQL keys hold at most 3,072 bytes).
pub fn from_postgres(
    native_type: &str,
    user_types: &[UserType],
    in_key: bool,
    key_columns: usize,
    flavor: Flavor,
) -> std::result::Result<String, String> {
    let text_collation = format!(
        "CHARACTER SET utf8mb4 COLLATE {}",
        flavor.binary_collation()
    );
    let key_chars = 768 / key_columns.max(1);
    if let Some(user_type) = user_types.iter().find(|user_type| {
        user_type.name.name == native_type || user_type.name.to_string() == native_type
    }) {
        return match user_type.kind {
            UserTypeKind::Enum => {
                let labels: Vec<String> = user_type
                    .enum_labels
                    .iter()
                    .map(|label| format!("'{}'", label.replace('\'', "''")))
                    .collect();
                Ok(format!("ENUM({}) {text_collation}", labels.join(", ")))
            }
            // A domain holds values of its base type (its checks stay on the source).
            UserTypeKind::Domain => from_postgres(
                user_type.base_type.as_deref().unwrap_or("text"),
                user_types,
                in_key,
                key_columns,
                flavor,
            ),
            // Composite, range and extension values travel as their PostgreSQL text.
            _ if in_key => Ok(format!("VARCHAR({key_chars}) {text_collation}")),
            _ => Ok(format!("LONGTEXT {text_collation}")),
        };
    }
    if native_type.ends_with("[]") {
        return Ok(if in_key {
            format!("VARCHAR({key_chars}) {text_collation}")
        } else {
            format!("LONGTEXT {text_collation}")
        });
    }
    let base = native_type.split('(').next().unwrap_or(native_type).trim();
    let precision = modifier(native_type);
    let fraction = |default: &str| -> String {
        precision
            .map(|digits| digits.to_string())
            .unwrap_or_else(|| default.to_string())
    };
    Ok(match base {
        "smallint" => "SMALLINT".into(),
        "integer" => "INT".into(),
        "bigint" => "BIGINT".into(),
        "real" => "FLOAT".into(),
        "double precision" => "DOUBLE".into(),
        "boolean" => "TINYINT(1)".into(),
        "numeric" => match precision {
            Some(digits) => {
                let (precision, scale) = digits.split_once(',').unwrap_or((digits, "0"));
                let precision: u32 = precision.trim().parse().unwrap_or(1000);
                let scale: i32 = scale.trim().parse().unwrap_or(1000);
                if precision > 65 || !(0..=30).contains(&scale) {
                    return Err(format!("numeric({digits}) exceeds MySQL DECIMAL (at most 65 digits, 30 after the point)"));
                }
                format!("DECIMAL({precision},{scale})")
            }
            None => return Err("numeric without a precision can hold more digits than MySQL DECIMAL(65,30); give the column a precision and scale on the source (ALTER TABLE ... TYPE numeric(p,s))".into()),
        },
        "text" | "character varying" | "citext" | "name" => match precision.and_then(|length| length.parse::<u32>().ok()) {
            Some(length) if length <= 16_383 && (!in_key || length as usize <= key_chars) => {
                format!("VARCHAR({length}) {text_collation}")
            }
            _ if in_key => format!("VARCHAR({key_chars}) {text_collation}"),
            _ => format!("LONGTEXT {text_collation}"),
        },
        "character" | "bpchar" => match precision.and_then(|length| length.parse::<u32>().ok()) {
            Some(length) if length <= 255 => format!("CHAR({length}) {text_collation}"),
            _ => return Err("character(n) longer than 255".into()),
        },
        "bytea" => if in_key { "VARBINARY(3072)".into() } else { "LONGBLOB".into() },
        "uuid" => "CHAR(36) CHARACTER SET ascii COLLATE ascii_bin".into(),
        "json" | "jsonb" => "JSON".into(),
        "date" => "DATE".into(),
        "timestamp without time zone" | "timestamp" => format!("DATETIME({})", fraction("6")),
        "timestamp with time zone" | "timestamptz" => format!("DATETIME({})", fraction("6")),
        "time without time zone" | "time" => format!("TIME({})", fraction("6")),
        "interval" | "inet" | "cidr" | "macaddr" | "macaddr8" | "xml" | "tsvector" | "money" | "point" => {
            if base == "money" {
                return Err("money depends on lc_monetary; convert it to numeric(p,s) on the source".into());
            }
            format!("VARCHAR(255) {text_collation}")
        }
        "bit" | "bit varying" => match precision.and_then(|length| length.parse::<u32>().ok()) {
            Some(length) if length <= 64 && base == "bit" => format!("BIT({length})"),
            _ => return Err(format!("{native_type} is wider than MySQL BIT(64)")),
        },
        other => return Err(format!("PostgreSQL type {other} has no lossless MySQL counterpart")),
    })
}

/// Checks that every table of the catalog can be created on MySQL; returns every problem.
pub fn untranslatable(catalog: &Catalog, flavor: Flavor) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for table in &catalog.tables {
        if let Some(other) = seen.insert(table.name.name.to_ascii_lowercase(), table.name.clone()) {
            problems.push(format!(
                "{} and {other} would both become table {} in the one target database",
                table.name, table.name.name
            ));
        }
        if table.name.name.chars().count() > 64 {
            problems.push(format!(
                "{}: MySQL table names have at most 64 characters",
                table.name
            ));
        }
        if table.dialect == "mysql" {
            continue;
        }
        for column in &table.columns {
            if column.name.chars().count() > 64 {
                problems.push(format!(
                    "{}.{}: MySQL column names have at most 64 characters",
                    table.name, column.name
                ));
            }
            if column.generated.is_some() {
                problems.push(format!("{}.{}: a PostgreSQL generated column cannot be translated; leave the table out or drop the expression", table.name, column.name));
                continue;
            }
            let in_key = table.primary_key.contains(&column.name);
            if let Err(reason) =
                from_postgres(&column.native_type, &catalog.types, in_key, 1, flavor)
            {
                problems.push(format!("{}.{}: {reason}", table.name, column.name));
            }
        }
    }
    problems
}

/// How many key columns of `table` hold text or bytes (PostgreSQL tables: their MySQL type
/// depends on it, an index key has a length limit).
fn text_keys(table: &TableSchema) -> usize {
    table
        .primary_key
        .iter()
        .filter(|name| {
            table.column(name).is_some_and(|column| {
                let base = column.native_type.split('(').next().unwrap_or_default();
                matches!(base, "text" | "character varying" | "bytea" | "citext")
                    || column.native_type.ends_with("[]")
            })
        })
        .count()
}

/// One column of `table` as MySQL declares it (`` `name` type ... ``), translated from
/// PostgreSQL where the table comes from there.
/// The column's type on a MySQL target: its own from a MySQL source, the translation of a
/// PostgreSQL one.
pub fn target_type(
    table: &TableSchema,
    column: &ferry_core::Column,
    catalog: &Catalog,
    flavor: Flavor,
) -> Result<String> {
    if table.dialect == "mysql" {
        return Ok(column.native_type.clone());
    }
    let in_key = table.primary_key.contains(&column.name);
    from_postgres(&column.native_type, &catalog.types, in_key, text_keys(table), flavor).map_err(|reason| {
        Error::operator("target.unsupported_type", format!("{}.{}: {reason}", table.name, column.name))
            .with_hint("see the type mapping in docs/mysql.md; change the column on the source or leave the table out")
    })
}

pub fn column_definition(
    table: &TableSchema,
    column: &ferry_core::Column,
    catalog: &Catalog,
    flavor: Flavor,
) -> Result<String> {
    let foreign = table.dialect != "mysql";
    let mut translated_default = None;
    let mut part = if foreign {
        let translated = target_type(table, column, catalog, flavor)?;
        translated_default = column.default.as_deref().and_then(|default| {
            ferry_sql::defaults::postgres_to_mysql(
                default,
                &translated,
                &column.native_type,
                flavor.mariadb,
            )
        });
        format!("{} {translated}", ident(&column.name))
    } else {
        let mut part = format!("{} {}", ident(&column.name), column.native_type);
        if let Some(collation) = &column.collation {
            let charset = collation.split('_').next().unwrap_or(collation);
            if charset != "binary" {
                part.push_str(&format!(" CHARACTER SET {charset} COLLATE {collation}"));
            }
        }
        if let Some(expression) = &column.generated {
            let kind = if column.generated_virtual {
                "VIRTUAL"
            } else {
                "STORED"
            };
            part.push_str(&format!(" GENERATED ALWAYS AS ({expression}) {kind}"));
        }
        part
    };
    if !column.nullable {
        part.push_str(" NOT NULL");
    }
    let first_key = table.primary_key.first() == Some(&column.name);
    let serial = column.identity.is_some()
        || column
            .default
            .as_deref()
            .is_some_and(|default| default.starts_with("nextval("));
    if first_key
        && serial
        && matches!(
            column.identity,
            Some(Identity::ByDefault | Identity::Always) | None
        )
    {
        part.push_str(" AUTO_INCREMENT");
    } else if !foreign && column.generated.is_none() {
        if let Some(default) = &column.default {
            part.push_str(&format!(" DEFAULT {default}"));
        }
        if let Some(expression) = &column.on_update {
            part.push_str(&format!(" ON UPDATE {expression}"));
        }
    } else if let Some(default) = translated_default {
        part.push_str(&format!(" DEFAULT {default}"));
    }
    Ok(part)
}

/// `CREATE TABLE IF NOT EXISTS` in the target database, with its primary key.
pub fn create_table(table: &TableSchema, catalog: &Catalog, flavor: Flavor) -> Result<String> {
    let mut parts = table
        .columns
        .iter()
        .map(|column| column_definition(table, column, catalog, flavor))
        .collect::<Result<Vec<_>>>()?;
    let key: Vec<String> = table.primary_key.iter().map(|name| ident(name)).collect();
    if !key.is_empty() {
        parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        ident(&table.name.name),
        parts.join(",\n  ")
    ))
}

/// The secondary indexes of `table` as (name, MySQL statement) pairs (PostgreSQL indexes on
/// plain columns are translated; expression and partial indexes are returned as skipped), then
/// its foreign keys as `ALTER TABLE ... ADD CONSTRAINT` statements.
pub fn secondary_indexes(table: &TableSchema) -> (Vec<(String, String)>, Vec<String>) {
    let mut statements = Vec::new();
    let mut skipped = Vec::new();
    for object in &table.secondary {
        if table.dialect == "mysql" && object.kind == ferry_core::schema::SecondaryKind::Index {
            statements.push((object.name.clone(), object.definition.clone()));
            continue;
        }
        let definition = &object.definition;
        let unique = definition.starts_with("CREATE UNIQUE INDEX");
        let columns = definition
            .rsplit_once(" USING btree (")
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .map(|list| {
                list.split(", ")
                    .map(|part| part.trim_matches('"').to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|columns| columns.iter().all(|column| table.column(column).is_some()));
        match (object.kind, columns) {
            (ferry_core::schema::SecondaryKind::Index, Some(columns)) => statements.push((
                object.name.clone(),
                format!(
                    "CREATE {}INDEX {} ON {} ({})",
                    if unique { "UNIQUE " } else { "" },
                    ident(&object.name),
                    ident(&table.name.name),
                    columns
                        .iter()
                        .map(|column| ident(column))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            _ => skipped.push(object.name.clone()),
        }
    }
    for key in &table.foreign_keys {
        let list = |columns: &[String]| {
            columns
                .iter()
                .map(|column| ident(column))
                .collect::<Vec<_>>()
                .join(", ")
        };
        statements.push((
            key.name.clone(),
            format!(
                "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {} ON UPDATE {}",
                ident(&table.name.name),
                ident(&key.name),
                list(&key.columns),
                ident(&key.referenced_table.name),
                list(&key.referenced_columns),
                key.on_delete.sql(),
                key.on_update.sql()
            ),
        ));
    }
    (statements, skipped)
}

/// The key columns as a row constructor: `(`a`, `b`)` or `` `a` `` for one column.
pub fn key_tuple(table: &TableSchema) -> String {
    let columns: Vec<String> = table.primary_key.iter().map(|name| ident(name)).collect();
    if columns.len() == 1 {
        columns[0].clone()
    } else {
        format!("({})", columns.join(", "))
    }
}

/// `lower <= key < upper` as SQL with `?` placeholders, and the values to bind.
pub fn range_predicate(table: &TableSchema, range: &KeyRange) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let placeholders = |count: usize| {
        if count == 1 {
            "?".to_string()
        } else {
            format!("({})", vec!["?"; count].join(", "))
        }
    };
    if let Some(lower) = &range.lower {
        clauses.push(format!(
            "{} >= {}",
            key_tuple(table),
            placeholders(lower.len())
        ));
        values.extend(lower.iter().cloned());
    }
    if let Some(upper) = &range.upper {
        clauses.push(format!(
            "{} < {}",
            key_tuple(table),
            placeholders(upper.len())
        ));
        values.extend(upper.iter().cloned());
    }
    if clauses.is_empty() {
        ("TRUE".into(), values)
    } else {
        (clauses.join(" AND "), values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARIADB: Flavor = Flavor { mariadb: true };

    #[test]
    fn postgres_types_map_or_are_refused() {
        let map = |native: &str| from_postgres(native, &[], false, 1, MARIADB);
        assert_eq!(map("numeric(65,30)").unwrap(), "DECIMAL(65,30)");
        assert!(map("numeric(66,0)").is_err());
        assert!(map("numeric").unwrap_err().contains("precision"));
        assert_eq!(map("timestamp(3) with time zone").unwrap(), "DATETIME(3)");
        assert!(map("character varying(20)")
            .unwrap()
            .contains("utf8mb4_nopad_bin"));
        assert!(from_postgres("text", &[], true, 2, MARIADB)
            .unwrap()
            .starts_with("VARCHAR(384)"));
        assert!(map("money").is_err());
        assert!(map("tsrange").is_err());
        assert_eq!(
            map("uuid").unwrap(),
            "CHAR(36) CHARACTER SET ascii COLLATE ascii_bin"
        );
    }
}
