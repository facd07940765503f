//! MySQL table definitions as PostgreSQL ones (the mapping table is in docs/mysql.md). Pure.
//!
//! Every mapping keeps every value: unsigned integers widen, BIGINT UNSIGNED becomes
//! numeric(20,0), TIME (up to 838 hours, negative) becomes interval, TIMESTAMP becomes
//! timestamptz (MySQL stores it as UTC), ENUM becomes text with a check of its labels. Common
//! column defaults are translated (`crate::defaults`); AUTO_INCREMENT becomes an identity.

use ferry_core::schema::{Catalog, Column, Identity, SecondaryKind, SecondaryObject};
use ferry_core::{Error, Result, TableName, TableSchema};

use super::ddl::{ident, literal, qualified};

/// The PostgreSQL type for a MySQL column type (`COLUMN_TYPE`), or why there is none.
pub fn from_mysql(column_type: &str) -> std::result::Result<String, String> {
    let lower = column_type.to_ascii_lowercase();
    let base = lower.split(['(', ' ']).next().unwrap_or_default();
    let unsigned = lower.contains("unsigned");
    let inside = lower.find('(').and_then(|start| {
        lower[start + 1..]
            .find(')')
            .map(|end| &lower[start + 1..start + 1 + end])
    });
    Ok(match base {
        "tinyint" => "smallint".into(),
        "smallint" if unsigned => "integer".into(),
        "smallint" => "smallint".into(),
        "mediumint" => "integer".into(),
        "int" | "integer" if unsigned => "bigint".into(),
        "int" | "integer" => "integer".into(),
        "bigint" if unsigned => "numeric(20,0)".into(),
        "bigint" => "bigint".into(),
        "float" => "real".into(),
        "double" | "real" => "double precision".into(),
        "decimal" | "numeric" => format!("numeric({})", inside.unwrap_or("10,0")),
        "char" | "varchar" => format!("character varying({})", inside.unwrap_or("255")),
        "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => "text".into(),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => "bytea".into(),
        "bit" => format!("bit({})", inside.unwrap_or("1")),
        "date" => "date".into(),
        "datetime" => format!("timestamp({}) without time zone", inside.unwrap_or("0")),
        "timestamp" => format!("timestamp({}) with time zone", inside.unwrap_or("0")),
        "time" => "interval".into(),
        "year" => "smallint".into(),
        "json" => "json".into(),
        other => {
            return Err(format!(
                "MySQL type {other} has no lossless PostgreSQL counterpart"
            ))
        }
    })
}

fn translate_column(table: &TableSchema, column: &Column) -> std::result::Result<Column, String> {
    if column.generated.is_some() {
        return Err(format!(
            "{}.{} is a generated column; its expression cannot be translated",
            table.name, column.name
        ));
    }
    let native_type = from_mysql(&column.native_type)
        .map_err(|reason| format!("{}.{}: {reason}", table.name, column.name))?;
    // Binary character sets hold bytes.
    let native_type = match (&column.collation, native_type.as_str()) {
        (Some(collation), _) if collation == "binary" => "bytea".to_string(),
        _ => native_type,
    };
    // PostgreSQL identities are smallint, integer or bigint; any other AUTO_INCREMENT column
    // (BIGINT UNSIGNED as numeric(20,0), FLOAT) keeps its values and draws new ones from a
    // sequence of its own, set up by [`catalog`].
    let identity_type = matches!(native_type.as_str(), "smallint" | "integer" | "bigint");
    Ok(Column {
        name: column.name.clone(),
        default: column
            .default
            .as_deref()
            .filter(|_| column.identity.is_none())
            .and_then(|default| crate::defaults::mysql_to_postgres(default, &native_type)),
        native_type,
        user_defined_type: false,
        nullable: column.nullable,
        identity: column
            .identity
            .filter(|_| identity_type)
            .map(|_| Identity::ByDefault),
        generated: None,
        collation: None,
    })
}

/// A MySQL index definition written by the MySQL catalog (`CREATE [UNIQUE] INDEX `name` ON
/// `table` (`a`, `b`(10)))`) for PostgreSQL; prefix lengths are dropped.
fn translate_index(table: &TableSchema, object: &SecondaryObject) -> Option<SecondaryObject> {
    let unique = object.definition.starts_with("CREATE UNIQUE INDEX");
    let list = object.definition.rsplit_once(" (")?.1.strip_suffix(')')?;
    let columns: Vec<String> = list
        .split(", ")
        .map(|part| {
            let name = part.trim().trim_start_matches('`');
            let end = name.rfind('`').unwrap_or(name.len());
            ident(&name[..end].replace("``", "`"))
        })
        .collect();
    let name =
        ferry_core::schema::fit_identifier(&format!("{}_{}", table.name.name, object.name), 63);
    Some(SecondaryObject {
        definition: format!(
            "CREATE {}INDEX {} ON {} USING btree ({})",
            if unique { "UNIQUE " } else { "" },
            ident(&name),
            qualified(&table.name),
            columns.join(", ")
        ),
        name,
        kind: SecondaryKind::Index,
    })
}

/// Why the MySQL tables of `catalog` cannot be created on PostgreSQL (empty when they can).
pub fn untranslatable(catalog: &Catalog) -> Vec<String> {
    let mut problems = Vec::new();
    for table in catalog
        .tables
        .iter()
        .filter(|table| table.dialect == "mysql")
    {
        if table.name.name.len() > 63 {
            problems.push(format!(
                "{}: PostgreSQL names have at most 63 bytes",
                table.name
            ));
        }
        for column in &table.columns {
            if let Err(reason) = translate_column(table, column) {
                problems.push(reason);
            }
        }
    }
    problems
}

/// The PostgreSQL definition of a MySQL table (others are returned as they are).
pub fn table(table: &TableSchema) -> Result<TableSchema> {
    if table.dialect != "mysql" {
        return Ok(table.clone());
    }
    let columns = table
        .columns
        .iter()
        .map(|column| translate_column(table, column))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|reason| {
            Error::operator("target.unsupported_type", reason)
                .with_hint("see the type mapping in docs/mysql.md; change the column on the source or leave the table out")
        })?;
    let mut checks = Vec::new();
    for column in &table.columns {
        let lower = column.native_type.to_ascii_lowercase();
        if lower.starts_with("enum(") {
            let labels = crate::syntax::labels(&column.native_type);
            let mut allowed: Vec<String> = labels.iter().map(|label| literal(label)).collect();
            // MySQL stores '' for a value it could not map (non-strict mode).
            allowed.push("''".into());
            checks.push((
                ferry_core::schema::fit_identifier(
                    &format!("{}_{}_enum", table.name.name, column.name),
                    63,
                ),
                format!(
                    "CHECK ({} IN ({}))",
                    ident(&column.name),
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(TableSchema {
        name: TableName::new(table.name.schema.clone(), table.name.name.clone()),
        dialect: "postgres".into(),
        columns,
        primary_key: table.primary_key.clone(),
        primary_key_name: None,
        checks,
        secondary: table
            .secondary
            .iter()
            .filter_map(|object| translate_index(table, object))
            .chain(table.foreign_keys.iter().map(foreign_key))
            .collect(),
        foreign_keys: table.foreign_keys.clone(),
        estimated_rows: table.estimated_rows,
    })
}

/// A MySQL foreign key as a PostgreSQL constraint definition (the database is the schema).
fn foreign_key(key: &ferry_core::schema::ForeignKey) -> SecondaryObject {
    let list = |columns: &[String]| {
        columns
            .iter()
            .map(|column| ident(column))
            .collect::<Vec<_>>()
            .join(", ")
    };
    SecondaryObject {
        name: key.name.clone(),
        kind: SecondaryKind::ForeignKey,
        definition: format!(
            "FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {} ON UPDATE {}",
            list(&key.columns),
            qualified(&key.referenced_table),
            list(&key.referenced_columns),
            key.on_delete.sql(),
            key.on_update.sql()
        ),
    }
}

/// The catalog with every MySQL table translated.
pub fn catalog(catalog: &Catalog) -> Result<Catalog> {
    let problems = untranslatable(catalog);
    if !problems.is_empty() {
        return Err(Error::operator(
            "target.unsupported_type",
            format!("these cannot be created on the PostgreSQL target without losing data: {}", problems.join("; ")),
        )
        .with_hint("see the type mapping in docs/mysql.md: change the columns on the source, or leave the tables out with --tables"));
    }
    let mut translated = catalog.clone();
    translated.tables = catalog.tables.iter().map(table).collect::<Result<_>>()?;
    // AUTO_INCREMENT columns that could not become identities: their sequence is created on its
    // own (under the name ferry reads and sets it by) and becomes the column's default.
    for sequence in &mut translated.sequences {
        let Some((owner, column_name)) = &sequence.owned_by else {
            continue;
        };
        let Some(table) = translated
            .tables
            .iter_mut()
            .find(|table| &table.name == owner)
        else {
            continue;
        };
        let Some(column) = table
            .columns
            .iter_mut()
            .find(|column| &column.name == column_name)
        else {
            continue;
        };
        if sequence.identity && column.identity.is_none() {
            sequence.identity = false;
            sequence.definition = "AS bigint".into();
            column.default = Some(format!(
                "nextval({}::regclass)",
                literal(&qualified(&sequence.name))
            ));
        }
    }
    Ok(translated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_types_widen_without_loss() {
        assert_eq!(from_mysql("bigint(20) unsigned").unwrap(), "numeric(20,0)");
        assert_eq!(from_mysql("int(10) unsigned").unwrap(), "bigint");
        assert_eq!(from_mysql("decimal(65,30)").unwrap(), "numeric(65,30)");
        assert_eq!(
            from_mysql("datetime(6)").unwrap(),
            "timestamp(6) without time zone"
        );
        assert_eq!(
            from_mysql("timestamp").unwrap(),
            "timestamp(0) with time zone"
        );
        assert_eq!(from_mysql("time(3)").unwrap(), "interval");
        assert_eq!(from_mysql("enum('a','b')").unwrap(), "text");
        assert_eq!(from_mysql("tinyint(1)").unwrap(), "smallint");
        assert!(from_mysql("geometry").is_err());
    }

    fn auto_increment_table(column_type: &str) -> Catalog {
        let column = Column {
            name: "id".into(),
            native_type: column_type.into(),
            user_defined_type: false,
            nullable: false,
            default: None,
            identity: Some(Identity::ByDefault),
            generated: None,
            collation: None,
        };
        Catalog {
            tables: vec![TableSchema {
                name: TableName::new("shop", "orders"),
                dialect: "mysql".into(),
                columns: vec![column],
                primary_key: vec!["id".into()],
                primary_key_name: None,
                checks: Vec::new(),
                secondary: Vec::new(),
                foreign_keys: Vec::new(),
                estimated_rows: 0,
            }],
            sequences: vec![ferry_core::schema::Sequence {
                name: TableName::new("shop", "orders_id_seq"),
                definition: String::new(),
                last_value: Some(9),
                owned_by: Some((TableName::new("shop", "orders"), "id".into())),
                identity: true,
            }],
            ..Catalog::default()
        }
    }

    #[test]
    fn auto_increment_becomes_an_identity_when_postgres_allows_one() {
        let translated = catalog(&auto_increment_table("int(11)")).unwrap();
        let column = &translated.tables[0].columns[0];
        assert_eq!(column.identity, Some(Identity::ByDefault));
        assert_eq!(column.default, None);
        assert!(translated.sequences[0].identity);
    }

    #[test]
    fn bigint_unsigned_auto_increment_draws_from_its_own_sequence() {
        let translated = catalog(&auto_increment_table("bigint(20) unsigned")).unwrap();
        let column = &translated.tables[0].columns[0];
        assert_eq!(column.native_type, "numeric(20,0)");
        assert_eq!(column.identity, None);
        assert_eq!(
            column.default.as_deref(),
            Some(r#"nextval('"shop"."orders_id_seq"'::regclass)"#)
        );
        let sequence = &translated.sequences[0];
        assert!(!sequence.identity);
        assert_eq!(sequence.name, TableName::new("shop", "orders_id_seq"));
        assert_eq!(sequence.definition, "AS bigint");
    }
}
