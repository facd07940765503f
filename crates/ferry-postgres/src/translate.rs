//! MySQL table definitions as PostgreSQL ones (the mapping table is in docs/mysql.md). Pure.
//!
//! Every mapping keeps every value: unsigned integers widen, BIGINT UNSIGNED becomes
//! numeric(20,0), TIME (up to 838 hours, negative) becomes interval, TIMESTAMP becomes
//! timestamptz (MySQL stores it as UTC), ENUM becomes text with a check of its labels. Common
//! column defaults are translated (`ferry_sql::defaults`); AUTO_INCREMENT becomes an identity.

use ferry_core::schema::{Catalog, Column, Identity, SecondaryKind, SecondaryObject};
use ferry_core::{Error, Result, TableName, TableSchema};

use super::ddl::{ident, literal, qualified};

/// Where the translated spatial columns find PostGIS on the target: the extension is created
/// there (`CREATE EXTENSION postgis WITH SCHEMA public`) when the target does not have it.
pub const POSTGIS_SCHEMA: &str = "public";

/// The PostGIS type the spatial columns need, as a type the target must have (its extension
/// is created when the target server makes it available; `check` says when it does not).
fn postgis() -> ferry_core::schema::UserType {
    ferry_core::schema::UserType {
        name: TableName::new(POSTGIS_SCHEMA, "geometry"),
        enum_labels: Vec::new(),
        kind: ferry_core::schema::UserTypeKind::Extension,
        definition: String::new(),
        base_type: None,
        extension: Some("postgis".into()),
    }
}

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
        // PostGIS, created on the target when it is available there ([`POSTGIS`]); the
        // subtype is kept, the SRID travels with each value.
        "geometry" => format!("{POSTGIS_SCHEMA}.geometry"),
        "point" => format!("{POSTGIS_SCHEMA}.geometry(Point)"),
        "linestring" => format!("{POSTGIS_SCHEMA}.geometry(LineString)"),
        "polygon" => format!("{POSTGIS_SCHEMA}.geometry(Polygon)"),
        "multipoint" => format!("{POSTGIS_SCHEMA}.geometry(MultiPoint)"),
        "multilinestring" => format!("{POSTGIS_SCHEMA}.geometry(MultiLineString)"),
        "multipolygon" => format!("{POSTGIS_SCHEMA}.geometry(MultiPolygon)"),
        // MySQL 5.7 and MariaDB do not check the subtype of a collection column: it may hold
        // any geometry.
        "geometrycollection" | "geomcollection" => format!("{POSTGIS_SCHEMA}.geometry"),
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
        type_signature: None,
        name: column.name.clone(),
        default: column
            .default
            .as_deref()
            .filter(|_| column.identity.is_none())
            .and_then(|default| ferry_sql::defaults::mysql_to_postgres(default, &native_type)),
        native_type,
        user_defined_type: false,
        nullable: column.nullable,
        identity: column
            .identity
            .filter(|_| identity_type)
            .map(|_| Identity::ByDefault),
        generated: None,
        collation: None,
        on_update: None,
        generated_virtual: false,
        comment: None,
    })
}

/// A MySQL index definition written by the MySQL catalog (`CREATE [UNIQUE|FULLTEXT|SPATIAL]
/// INDEX `name` ON `table` (`a`, `b`(10)))` as its nearest PostgreSQL equivalent: a prefix part
/// indexes `substr(column, 1, length)` (a unique prefix index stays exactly as unique), a
/// FULLTEXT index becomes a GIN index over the columns' `simple` text search vector (named in
/// the log), and a SPATIAL index becomes a GiST index (PostGIS).
fn translate_index(table: &TableSchema, object: &SecondaryObject) -> Option<SecondaryObject> {
    let definition = object.definition.as_str();
    let name =
        ferry_core::schema::fit_identifier(&format!("{}_{}", table.name.name, object.name), 63);
    let parts = index_parts(definition)?;
    if definition.starts_with("CREATE SPATIAL INDEX") {
        let columns: Vec<String> = parts.iter().map(|(column, _)| ident(column)).collect();
        return Some(SecondaryObject {
            name: name.clone(),
            kind: SecondaryKind::Index,
            definition: format!(
                "CREATE INDEX {} ON {} USING gist ({})",
                ident(&name),
                qualified(&table.name),
                columns.join(", ")
            ),
        });
    }
    let (unique, method, list) = if definition.starts_with("CREATE FULLTEXT INDEX") {
        tracing::warn!(table = %table.name, index = %object.name, "a FULLTEXT index becomes a GIN index on to_tsvector('simple', ...) of its columns: queries must use that expression (and MATCH ... AGAINST becomes @@)");
        let text: Vec<String> = parts
            .iter()
            .map(|(column, _)| format!("coalesce({}, '')", ident(column)))
            .collect();
        (
            "",
            "gin",
            format!(
                "to_tsvector('simple'::regconfig, {})",
                text.join(" || ' ' || ")
            ),
        )
    } else {
        let columns: Vec<String> = parts
            .iter()
            .map(|(column, prefix)| match prefix {
                Some(length) => format!("(substr({}, 1, {length}))", ident(column)),
                None => ident(column),
            })
            .collect();
        (
            if definition.starts_with("CREATE UNIQUE INDEX") {
                "UNIQUE "
            } else {
                ""
            },
            "btree",
            columns.join(", "),
        )
    };
    Some(SecondaryObject {
        definition: format!(
            "CREATE {unique}INDEX {} ON {} USING {method} ({list})",
            ident(&name),
            qualified(&table.name),
        ),
        name,
        kind: SecondaryKind::Index,
    })
}

/// The (column, prefix length) parts of a MySQL catalog index definition: the list after the
/// last unquoted ` (`, each part a backquoted name and an optional `(length)`.
fn index_parts(definition: &str) -> Option<Vec<(String, Option<u32>)>> {
    let on = definition.find(" ON `")?;
    let mut rest = &definition[on + 5..];
    // Skip the table name.
    loop {
        let end = rest.find('`')?;
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix('`') {
            rest = after;
            continue;
        }
        break;
    }
    let mut list = rest.strip_prefix(" (")?.strip_suffix(')')?;
    let mut parts = Vec::new();
    loop {
        list = list.trim_start().strip_prefix('`')?;
        let mut name = String::new();
        loop {
            let end = list.find('`')?;
            name.push_str(&list[..end]);
            list = &list[end + 1..];
            match list.strip_prefix('`') {
                Some(after) => {
                    name.push('`');
                    list = after;
                }
                None => break,
            }
        }
        let mut prefix = None;
        if let Some(after) = list.strip_prefix('(') {
            let end = after.find(')')?;
            prefix = Some(after[..end].parse().ok()?);
            list = &after[end + 1..];
        }
        parts.push((name, prefix));
        match list.strip_prefix(',') {
            Some(after) => list = after,
            None if list.is_empty() => return Some(parts),
            None => return None,
        }
    }
}

/// Why the MySQL tables of `catalog` cannot be created on PostgreSQL (empty when they can).
pub fn untranslatable(catalog: &Catalog) -> Vec<String> {
    let mut problems = Vec::new();
    for table in catalog
        .tables
        .iter()
        .filter(|table| table.dialect == "mysql")
    {
        // Never truncated silently (PostgreSQL would cut a longer name to 63 bytes): named, with
        // a rename that cannot collide, to accept in the config file.
        if table.name.name.len() > 63 {
            let renamed = ferry_core::schema::fit_identifier(&table.name.name, 63);
            problems.push(format!(
                "{}: PostgreSQL names have at most 63 bytes; to accept a rename, add to the config file: [[transform]] table = \"{}\" rename = \"{}\"",
                table.name, table.name, renamed
            ));
        }
        for column in table.columns.iter().filter(|column| column.name.len() > 63) {
            let renamed = ferry_core::schema::fit_identifier(&column.name, 63);
            problems.push(format!(
                "{}.{}: PostgreSQL names have at most 63 bytes; to accept a rename, add to the config file: [[transform]] table = \"{}\" columns = {{ \"{}\" = \"{}\" }}",
                table.name, column.name, table.name, column.name, renamed
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
            let labels = ferry_sql::syntax::labels(&column.native_type);
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
        partitioning: None,
        comment: None,
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
    let spatial = translated.tables.iter().any(|table| {
        table.columns.iter().any(|column| {
            column
                .native_type
                .starts_with(&format!("{POSTGIS_SCHEMA}.geometry"))
        })
    });
    if spatial
        && !translated
            .types
            .iter()
            .any(|known| known.name == postgis().name)
    {
        translated.types.push(postgis());
    }
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
        assert_eq!(from_mysql("geometry").unwrap(), "public.geometry");
        assert_eq!(from_mysql("point").unwrap(), "public.geometry(Point)");
        assert_eq!(from_mysql("geomcollection").unwrap(), "public.geometry");
    }

    fn auto_increment_table(column_type: &str) -> Catalog {
        let column = Column {
            type_signature: None,
            name: "id".into(),
            native_type: column_type.into(),
            user_defined_type: false,
            nullable: false,
            default: None,
            identity: Some(Identity::ByDefault),
            generated: None,
            collation: None,
            on_update: None,
            generated_virtual: false,
            comment: None,
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
                partitioning: None,
                comment: None,
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

    #[test]
    fn mysql_index_kinds_become_their_nearest_postgres_equivalents() {
        let table = &auto_increment_table("int(11)").tables[0];
        let index = |definition: &str| {
            translate_index(
                table,
                &SecondaryObject {
                    name: "i".into(),
                    kind: SecondaryKind::Index,
                    definition: definition.into(),
                },
            )
            .map(|object| object.definition)
        };
        assert_eq!(
            index("CREATE UNIQUE INDEX `i` ON `orders` (`a``b`(10), `c, d`)").unwrap(),
            r#"CREATE UNIQUE INDEX "orders_i" ON "shop"."orders" USING btree ((substr("a`b", 1, 10)), "c, d")"#
        );
        assert_eq!(
            index("CREATE FULLTEXT INDEX `i` ON `orders` (`title`, `description`)").unwrap(),
            r#"CREATE INDEX "orders_i" ON "shop"."orders" USING gin (to_tsvector('simple'::regconfig, coalesce("title", '') || ' ' || coalesce("description", '')))"#
        );
        assert_eq!(
            index("CREATE SPATIAL INDEX `i` ON `orders` (`location`)").unwrap(),
            r#"CREATE INDEX "orders_i" ON "shop"."orders" USING gist ("location")"#
        );
        assert_eq!(
            index_parts("CREATE INDEX `x (y)` ON `t ``(a)` (`a`)"),
            Some(vec![("a".to_string(), None)])
        );
    }
}
