//! Reading table definitions from `information_schema`. A MySQL database is ferry's schema:
//! tables are named `database.table`.

use std::collections::BTreeMap;

use ferry_core::schema::{
    Catalog, Column, ForeignKey, Identity, ReferentialAction, SecondaryKind, SecondaryObject,
    Sequence, TableName,
};
use ferry_core::select::Selection;
use ferry_core::{Result, TableSchema};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::ddl::ident;
use super::errors::classify;
use super::types::Kind;

/// The kind of a column of a MySQL-dialect table.
pub fn kind_of(column: &Column) -> Kind {
    let data_type = column
        .native_type
        .split(['(', ' '])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let charset = column
        .collation
        .as_deref()
        .map(|collation| collation.split('_').next().unwrap_or(collation));
    // The column type as written: ENUM and SET labels keep their case.
    Kind::of(&data_type, &column.native_type, charset)
}

type ColumnRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

/// A column default as SQL: MariaDB reports it as an expression already; MySQL reports literals
/// bare and marks expressions `DEFAULT_GENERATED`.
fn default_expression(default: String, extra: &str, mariadb: bool) -> String {
    if mariadb {
        default
    } else if extra.contains("default_generated") {
        format!("({default})")
    } else {
        format!("'{}'", default.replace('\'', "''"))
    }
}

/// The sequence standing for a table's AUTO_INCREMENT column (named as PostgreSQL names an
/// identity's sequence), with `next` the table's next AUTO_INCREMENT value.
pub(super) fn auto_increment_sequence(
    database: &str,
    table: &str,
    column: &str,
    next: Option<u64>,
) -> Sequence {
    Sequence {
        name: TableName::new(database, format!("{table}_{column}_seq")),
        definition: String::new(),
        last_value: next.map(|next| next.saturating_sub(1) as i64),
        owned_by: Some((TableName::new(database, table), column.to_string())),
        identity: true,
    }
}

/// (name, estimated rows, next AUTO_INCREMENT, engine)
type TableRow = (String, Option<u64>, Option<u64>, Option<String>);

/// An index being read: (kind word, parts, the plain columns when no part is a prefix).
type IndexParts<'a> = (&'a str, Vec<String>, Option<Vec<String>>);

/// Reads the selected tables of `config`'s database as that config sees them: with generated
/// columns as plain ones when it materializes them. Returns the catalog and the columns
/// (`table.column`) that were generated.
pub(crate) async fn read_catalog_for(
    conn: &mut Conn,
    config: &super::config::MysqlConfig,
    selection: &Selection,
) -> Result<(Catalog, Vec<String>)> {
    let mut catalog = read_catalog(conn, config.database(), selection).await?;
    let mut materialized = Vec::new();
    if config.materializes_generated() {
        for table in &mut catalog.tables {
            for column in &mut table.columns {
                if let Some(expression) = column.generated.take() {
                    materialized.push(format!("{}.{} (AS {expression})", table.name, column.name));
                    column.generated_virtual = false;
                    column.default = None;
                }
            }
        }
    }
    Ok((catalog, materialized))
}

/// Reads the selected tables of the connection's database.
pub(super) async fn read_catalog(
    conn: &mut Conn,
    database: &str,
    selection: &Selection,
) -> Result<Catalog> {
    let what = "reading the table definitions";
    let mariadb = super::connection::is_mariadb(conn).await?;
    let tables: Vec<TableRow> = conn
        .exec(
            "SELECT TABLE_NAME, TABLE_ROWS, AUTO_INCREMENT, ENGINE FROM information_schema.TABLES
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (database,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    let columns: Vec<ColumnRow> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA,
                    GENERATION_EXPRESSION, COLLATION_NAME
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (database,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    let indexes: Vec<(String, String, i64, String, Option<i64>, String)> = conn
        .exec(
            "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE FROM information_schema.STATISTICS
             WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
            (database,),
        )
        .await
        .map_err(|error| classify(error, what))?;
    // MariaDB keeps JSON as LONGTEXT with a json_valid() check.
    let json_checks: Vec<(String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
             WHERE CONSTRAINT_SCHEMA = ? AND CHECK_CLAUSE LIKE 'json_valid(%'",
            (database,),
        )
        .await
        .unwrap_or_default();

    let mut by_table: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for (table, name, column_type, nullable, default, extra, generation, collation) in columns {
        let extra_lower = extra.to_ascii_lowercase();
        let is_json = json_checks.iter().any(|(check_table, clause)| {
            check_table == &table && clause.contains(&format!("`{name}`"))
        });
        let generated = (extra_lower.contains("generated"))
            .then(|| generation.unwrap_or_default())
            .filter(|_| extra_lower.contains("stored") || extra_lower.contains("virtual"));
        by_table.entry(table).or_default().push(Column {
            type_signature: None,
            name,
            native_type: if is_json { "json".into() } else { column_type },
            user_defined_type: false,
            nullable: nullable == "YES",
            default: default
                .filter(|_| generated.is_none())
                .map(|default| default_expression(default, &extra_lower, mariadb)),
            identity: extra_lower
                .contains("auto_increment")
                .then_some(Identity::ByDefault),
            generated,
            collation: if is_json { None } else { collation },
            on_update: extra_lower.find("on update ").map(|start| {
                extra[start + "on update ".len()..]
                    .trim()
                    .to_ascii_lowercase()
            }),
            generated_virtual: extra_lower.contains("virtual"),
            comment: None,
        });
    }

    let mut catalog = Catalog::default();
    for (table, estimated_rows, auto_increment, engine) in tables {
        let name = TableName::new(database, &table);
        if !selection.matches(&name) {
            continue;
        }
        let columns = by_table.remove(&table).unwrap_or_default();
        let mut primary_key = Vec::new();
        // index name: (kind word, parts, plain columns when no part is a prefix)
        let mut secondary: BTreeMap<String, IndexParts> = BTreeMap::new();
        for (_, index, non_unique, column, prefix, index_type) in
            indexes.iter().filter(|row| row.0 == table)
        {
            if index == "PRIMARY" {
                primary_key.push(column.clone());
            } else {
                // A SPATIAL key reports a sub-part (32 on MariaDB) that its definition never
                // takes.
                let prefix = prefix.filter(|_| index_type != "SPATIAL");
                let part = match prefix {
                    Some(length) => format!("{}({length})", ident(column)),
                    None => ident(column),
                };
                let kind = match (index_type.as_str(), *non_unique == 0) {
                    ("FULLTEXT", _) => "FULLTEXT ",
                    ("SPATIAL", _) => "SPATIAL ",
                    (_, true) => "UNIQUE ",
                    (_, false) => "",
                };
                let entry =
                    secondary
                        .entry(index.clone())
                        .or_insert((kind, Vec::new(), Some(Vec::new())));
                entry.1.push(part);
                match (&mut entry.2, prefix) {
                    (Some(columns), None) => columns.push(column.clone()),
                    (plain, _) => *plain = None,
                }
            }
        }
        // Without a primary key, a unique index on NOT NULL columns (no prefix) identifies the
        // rows as well, as InnoDB itself uses it: the fewest columns, then the first by name.
        if primary_key.is_empty() {
            let substitute = secondary
                .iter()
                .filter(|(_, (kind, _, plain))| {
                    *kind == "UNIQUE "
                        && plain.as_ref().is_some_and(|plain| {
                            plain.iter().all(|name| {
                                columns
                                    .iter()
                                    .any(|column| &column.name == name && !column.nullable)
                            })
                        })
                })
                .min_by_key(|(index, (_, parts, _))| (parts.len(), (*index).clone()))
                .map(|(index, (_, _, plain))| (index.clone(), plain.clone().unwrap_or_default()));
            if let Some((index, key)) = substitute {
                secondary.remove(&index);
                primary_key = key;
            }
        }
        // A consistent snapshot does not cover a non-transactional table: its copy cannot be
        // placed exactly in the binary log, which a table without a key needs.
        let transactional = engine
            .as_deref()
            .is_none_or(|engine| engine.eq_ignore_ascii_case("InnoDB"));
        if primary_key.is_empty() && !transactional {
            catalog.unsupported.push((
                name.clone(),
                format!(
                    "it has no key and the {} engine, which a consistent snapshot does not cover, so its copy cannot be placed exactly in the change stream (ALTER TABLE ... ENGINE=InnoDB, or add a primary key)",
                    engine.as_deref().unwrap_or_default()
                ),
            ));
            continue;
        }
        if let Some(column) = columns
            .iter()
            .find(|column| matches!(kind_of(column), Kind::Unsupported(_)))
        {
            catalog.unsupported.push((
                name.clone(),
                format!(
                    "column {} has type {}, which ferry cannot move",
                    column.name, column.native_type
                ),
            ));
            continue;
        }
        // mysql_common 0.37 decodes a negative TIME(1) or TIME(2) with a fraction from the
        // binary log by an unsigned subtraction: a panic in debug builds, a wrong value in
        // release builds. Refused until ferry decodes those bytes itself.
        if let Some(column) = columns.iter().find(|column| {
            let native = column.native_type.to_ascii_lowercase();
            native == "time(1)" || native == "time(2)"
        }) {
            catalog.unsupported.push((
                name.clone(),
                format!(
                    "column {} has type {}, whose negative values with a fraction cannot be read \
                     from the binary log correctly; change it to TIME(3) (ALTER TABLE ... MODIFY {} \
                     TIME(3)) or leave the table out",
                    column.name, column.native_type, column.name
                ),
            ));
            continue;
        }
        if let Some(column) = columns.iter().find(|column| column.identity.is_some()) {
            catalog.sequences.push(auto_increment_sequence(
                database,
                &table,
                &column.name,
                auto_increment,
            ));
        }
        catalog.tables.push(TableSchema {
            foreign_keys: Vec::new(),
            name: name.clone(),
            dialect: "mysql".into(),
            columns,
            primary_key,
            primary_key_name: None,
            checks: Vec::new(),
            secondary: secondary
                .into_iter()
                .map(|(index, (kind, parts, _))| SecondaryObject {
                    definition: format!(
                        "CREATE {kind}INDEX {} ON {} ({})",
                        ident(&index),
                        ident(&table),
                        parts.join(", ")
                    ),
                    name: index,
                    kind: SecondaryKind::Index,
                })
                .collect(),
            estimated_rows: estimated_rows.unwrap_or(0),
            partitioning: None,
            comment: None,
        });
    }
    read_foreign_keys(conn, database, &mut catalog).await?;
    Ok(catalog)
}

/// (table, constraint, column, referenced schema, referenced table, referenced column, delete
/// rule, update rule)
type ForeignKeyRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
);

/// The foreign keys between the catalog's tables, in structured form, on the referencing table.
/// A key to a table that is not migrated is left out (named in the log).
async fn read_foreign_keys(conn: &mut Conn, database: &str, catalog: &mut Catalog) -> Result<()> {
    let rows: Vec<ForeignKeyRow> = conn
        .exec(
            "SELECT r.TABLE_NAME, r.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_SCHEMA, r.REFERENCED_TABLE_NAME,
                    k.REFERENCED_COLUMN_NAME, r.DELETE_RULE, r.UPDATE_RULE
             FROM information_schema.REFERENTIAL_CONSTRAINTS r
             JOIN information_schema.KEY_COLUMN_USAGE k
               ON k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME AND k.TABLE_NAME = r.TABLE_NAME
             WHERE r.CONSTRAINT_SCHEMA = ? AND k.REFERENCED_TABLE_NAME IS NOT NULL ORDER BY r.TABLE_NAME, r.CONSTRAINT_NAME, k.ORDINAL_POSITION",
            (database,),
        )
        .await
        .map_err(|error| classify(error, "reading foreign keys"))?;
    let migrated: std::collections::BTreeSet<String> = catalog
        .tables
        .iter()
        .map(|table| table.name.name.clone())
        .collect();
    let mut keys: Vec<ForeignKey> = Vec::new();
    for (
        table,
        name,
        column,
        referenced_schema,
        referenced_table,
        referenced_column,
        on_delete,
        on_update,
    ) in rows
    {
        if !migrated.contains(&table) {
            continue;
        }
        if referenced_schema
            .as_deref()
            .is_some_and(|schema| schema != database)
            || !migrated.contains(&referenced_table)
        {
            tracing::warn!(table = %table, constraint = %name, referenced = %referenced_table, "foreign key references a table that is not migrated: its actions are not reproduced and it is not created on the target");
            continue;
        }
        match keys
            .last_mut()
            .filter(|key| key.table.name == table && key.name == name)
        {
            Some(key) => {
                key.columns.push(column);
                key.referenced_columns.push(referenced_column);
            }
            None => keys.push(ForeignKey {
                name,
                table: TableName::new(database, table),
                columns: vec![column],
                referenced_table: TableName::new(database, referenced_table),
                referenced_columns: vec![referenced_column],
                on_delete: ReferentialAction::parse(&on_delete)
                    .unwrap_or(ReferentialAction::NoAction),
                on_update: ReferentialAction::parse(&on_update)
                    .unwrap_or(ReferentialAction::NoAction),
            }),
        }
    }
    for key in keys {
        if let Some(table) = catalog
            .tables
            .iter_mut()
            .find(|table| table.name == key.table)
        {
            table.foreign_keys.push(key);
        }
    }
    Ok(())
}
