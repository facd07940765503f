//! Reading the source catalog: tables, columns, keys, constraints, indexes, enum types and
//! sequences. Runs with `search_path = ''`, so every name PostgreSQL renders (types, defaults,
//! index and constraint definitions) comes out schema-qualified and can be replayed elsewhere.

use std::collections::{BTreeMap, BTreeSet};

use ferry_core::schema::{
    Catalog, Column, Identity, Partition, Partitioning, SecondaryKind, SecondaryObject, Sequence,
};
use ferry_core::select::Selection;
use ferry_core::{Result, TableName, TableSchema};
use tokio_postgres::Client;
use tracing::warn;

use super::errors::classify;

/// Schemas that are never migrated.
pub(super) const SYSTEM_SCHEMAS: &str = "('pg_catalog', 'information_schema', '_ferry')";

/// Reads the selected tables and what they need.
pub(super) async fn read_catalog(client: &Client, selection: &Selection) -> Result<Catalog> {
    let what = "reading the source catalog";
    let rows = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname, c.relname, greatest(c.reltuples, 0)::bigint, c.relkind::text, c.relispartition,
                        c.relpersistence::text
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN {SYSTEM_SCHEMAS}
                   AND n.nspname NOT LIKE 'pg\\_%'
                   -- A table an extension owns (PostGIS's spatial_ref_sys) comes with the
                   -- extension, which the target creates.
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                     AND d.deptype = 'e')
                 ORDER BY n.nspname, c.relname"
            ),
            &[],
        )
        .await
        .map_err(|error| classify(error, what))?;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|error| classify(error, what))?
        .get(0);
    let mut selected: Vec<(u32, TableName, i64)> = Vec::new();
    let mut partitioned: BTreeSet<u32> = BTreeSet::new();
    let mut unsupported = Vec::new();
    for row in rows {
        let name = TableName::new(row.get::<_, String>(1), row.get::<_, String>(2));
        if !selection.matches(&name) {
            continue;
        }
        let oid: u32 = row.get(0);
        if row.get::<_, bool>(5) {
            // A partition moves with its partitioned table (read and published through it).
            let root = client
                .query_one(
                    "SELECT n.nspname, c.relname FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.oid = pg_partition_root($1::oid)",
                    &[&oid],
                )
                .await
                .map_err(|error| classify(error, what))?;
            let root = TableName::new(root.get::<_, String>(0), root.get::<_, String>(1));
            let root_selected = selection.matches(&root);
            if !root_selected {
                unsupported.push((
                    name,
                    format!("it is a partition of {root}, which moves whole: select {root} instead (its partitions come with it)"),
                ));
            }
        } else if row.get::<_, String>(4) == "p" && version < 130000 {
            unsupported.push((
                name,
                "partitioned tables need PostgreSQL 13 or later on the source (to publish their changes through the partitioned table)".to_string(),
            ));
        } else if row.get::<_, String>(6) == "u" {
            unsupported.push((
                name.clone(),
                format!("it is UNLOGGED: its changes never reach the WAL, so they cannot be streamed (ALTER TABLE {} SET LOGGED, or leave it out)", super::ddl::qualified(&name)),
            ));
        } else {
            if row.get::<_, String>(4) == "p" {
                partitioned.insert(oid);
            }
            selected.push((oid, name, row.get(3)));
        }
    }
    let selected_oids: BTreeMap<u32, TableName> = selected
        .iter()
        .map(|(oid, name, _)| (*oid, name.clone()))
        .collect();
    // Inheritance children are tables of their own: a parent selected without them moves only
    // its own rows (reads say ONLY). Legacy partitioning puts every row in the children.
    let children = client
        .query(
            "SELECT i.inhparent, format('%I.%I', n.nspname, c.relname), i.inhrelid FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT c.relispartition",
            &[],
        )
        .await
        .map_err(|error| classify(error, what))?;
    for row in &children {
        let (parent, child, child_oid): (u32, String, u32) = (row.get(0), row.get(1), row.get(2));
        if let Some(parent_name) = selected_oids.get(&parent) {
            if !selected_oids.contains_key(&child_oid) && !selection.is_restricted() {
                warn!(parent = %parent_name, child = %child, "an inheritance child of a selected table is not selected: its rows do not move (select it too to move them)");
            }
        }
    }
    let mut catalog = Catalog {
        unsupported,
        ..Catalog::default()
    };
    let mut user_types: BTreeSet<u32> = BTreeSet::new();
    for (oid, name, estimated_rows) in &selected {
        let table = read_table(
            client,
            *oid,
            name,
            *estimated_rows,
            &selected_oids,
            &mut user_types,
            selection.is_restricted(),
        )
        .await?;
        let mut table = table;
        if partitioned.contains(oid) {
            match read_partitioning(client, *oid).await? {
                Ok((partitioning, rows)) => {
                    table.partitioning = Some(partitioning);
                    table.estimated_rows = rows;
                }
                Err(reason) => {
                    catalog.unsupported.push((name.clone(), reason));
                    continue;
                }
            }
        }
        // Large objects live outside the table: the references would dangle on the target.
        if let Some(column) = table.columns.iter().find(|column| {
            matches!(column.native_type.as_str(), "oid" | "lo")
                || column.native_type.ends_with(".lo")
        }) {
            catalog.unsupported.push((
                name.clone(),
                format!("column {} holds large-object references ({}); large objects are not migrated yet, so they would dangle on the target (store the data in a bytea column, or leave the table out)", column.name, column.native_type),
            ));
            continue;
        }
        catalog.tables.push(table);
    }
    catalog.types = super::types::read_user_types(client, &user_types).await?;
    catalog.sequences = read_sequence_definitions(client, &selected_oids).await?;
    Ok(catalog)
}

async fn read_table(
    client: &Client,
    oid: u32,
    name: &TableName,
    estimated_rows: i64,
    selected: &BTreeMap<u32, TableName>,
    user_types: &mut BTreeSet<u32>,
    // A look at a few tables: keys to the others are not "not migrated".
    restricted: bool,
) -> Result<TableSchema> {
    let what = format!("reading the definition of {name}");
    let columns = client
        .query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
                    base.typnamespace <> 'pg_catalog'::regnamespace, base.typtype::text, base.oid,
                    CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
                         THEN (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co
                               JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END,
                    col_description(a.attrelid, a.attnum),
                    a.atttypid::oid, a.atttypmod
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             JOIN pg_type base ON base.oid = CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN t.typelem ELSE t.oid END
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|error| classify(error, &what))?;
    let columns: Vec<Column> = columns
        .iter()
        .map(|row| {
            let identity: String = row.get(4);
            let generated: String = row.get(5);
            let default: Option<String> = row.get(3);
            let user_defined: bool = row.get(6);
            if user_defined {
                user_types.insert(row.get(8));
            }
            Column {
                type_signature: Some(super::types::type_signature(
                    row.get::<_, u32>(11),
                    row.get::<_, i32>(12),
                )),
                name: row.get(0),
                native_type: row.get(1),
                user_defined_type: user_defined,
                nullable: row.get(2),
                identity: match identity.as_str() {
                    "a" => Some(Identity::Always),
                    "d" => Some(Identity::ByDefault),
                    _ => None,
                },
                generated: if generated == "s" {
                    default.clone()
                } else {
                    None
                },
                default: if generated == "s" { None } else { default },
                collation: row.get(9),
                on_update: None,
                generated_virtual: false,
                comment: row.get(10),
            }
        })
        .collect();

    let constraints = client
        .query(
            "SELECT c.conname, c.contype::text, pg_get_constraintdef(c.oid), c.confrelid,
                    ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(attnum, position)
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.position)::text[]
             FROM pg_constraint c WHERE c.conrelid = $1 ORDER BY c.conname",
            &[&oid],
        )
        .await
        .map_err(|error| classify(error, &what))?;
    let mut primary_key = Vec::new();
    let mut primary_key_name = None;
    let mut checks = Vec::new();
    let mut secondary = Vec::new();
    for row in &constraints {
        let constraint_name: String = row.get(0);
        let definition: String = row.get(2);
        match row.get::<_, String>(1).as_str() {
            "p" => {
                primary_key = row.get(4);
                primary_key_name = Some(constraint_name);
            }
            "c" => checks.push((constraint_name, definition)),
            "u" | "x" => secondary.push(SecondaryObject {
                name: constraint_name,
                kind: SecondaryKind::Constraint,
                definition,
            }),
            "f" => {
                let referenced: u32 = row.get(3);
                if selected.contains_key(&referenced) {
                    secondary.push(SecondaryObject {
                        name: constraint_name,
                        kind: SecondaryKind::ForeignKey,
                        definition,
                    });
                } else if !restricted {
                    warn!(table = %name, constraint = %constraint_name, "foreign key references a table that is not migrated; it is not created on the target");
                }
            }
            _ => {}
        }
    }
    let indexes = client
        .query(
            "SELECT ic.relname, pg_get_indexdef(i.indexrelid)
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indrelid = $1
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x'))
             ORDER BY ic.relname",
            &[&oid],
        )
        .await
        .map_err(|error| classify(error, &what))?;
    for row in &indexes {
        secondary.push(SecondaryObject {
            name: row.get(0),
            kind: SecondaryKind::Index,
            definition: row.get(1),
        });
    }
    // Inheritance parents that are migrated too: the link is re-created on the target (a
    // parent that is not migrated is named in the log).
    let parents = client
        .query(
            "SELECT inhparent, format('%I.%I', n.nspname, p.relname)
             FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace
             WHERE i.inhrelid = $1 ORDER BY i.inhseqno",
            &[&oid],
        )
        .await
        .map_err(|error| classify(error, &what))?;
    for row in &parents {
        let parent: u32 = row.get(0);
        let definition: String = row.get(1);
        if let Some(parent_name) = selected.get(&parent) {
            secondary.push(SecondaryObject {
                name: parent_name.to_string(),
                kind: SecondaryKind::Inherit,
                definition,
            });
        } else if !restricted {
            warn!(table = %name, parent = %definition, "the table inherits from a table that is not migrated; its rows move, the link does not");
        }
    }
    if primary_key.is_empty() {
        if let Some(key) = substitute_key(client, name, &what).await? {
            secondary.retain(|object| {
                object.name != key.name
                    || !matches!(
                        object.kind,
                        SecondaryKind::Index | SecondaryKind::Constraint
                    )
            });
            primary_key = key.columns;
            primary_key_name = Some(key.name);
        }
    }
    let comment: Option<String> = client
        .query_one("SELECT obj_description($1, 'pg_class')", &[&oid])
        .await
        .map_err(|error| classify(error, &what))?
        .get(0);
    Ok(TableSchema {
        name: name.clone(),
        dialect: "postgres".into(),
        columns,
        primary_key,
        primary_key_name,
        checks,
        secondary,
        foreign_keys: Vec::new(),
        estimated_rows: estimated_rows.max(0) as u64,
        partitioning: None,
        comment,
    })
}

/// How the partitioned table `oid` splits its rows, with the estimated row count of all its
/// partitions; or why it cannot be migrated (a partition that is a foreign table, or UNLOGGED).
async fn read_partitioning(
    client: &Client,
    oid: u32,
) -> Result<std::result::Result<(Partitioning, u64), String>> {
    let what = "reading partitions";
    let key: String = client
        .query_one("SELECT pg_get_partkeydef($1)", &[&oid])
        .await
        .map_err(|error| classify(error, what))?
        .get(0);
    let rows = client
        .query(
            "SELECT n.nspname, c.relname, pn.nspname, p.relname, pg_get_expr(c.relpartbound, c.oid),
                    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
                    greatest(c.reltuples, 0)::bigint, c.relkind::text, c.relpersistence::text
             FROM pg_partition_tree($1::oid) t
             JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_class p ON p.oid = t.parentrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
             WHERE t.level > 0
             ORDER BY t.level, n.nspname, c.relname",
            &[&oid],
        )
        .await
        .map_err(|error| classify(error, what))?;
    let mut partitions = Vec::new();
    let mut estimated = 0u64;
    for row in &rows {
        let name = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        match (row.get::<_, String>(7).as_str(), row.get::<_, String>(8).as_str()) {
            ("f", _) => {
                return Ok(Err(format!(
                    "its partition {name} is a foreign table, whose rows live on another server"
                )))
            }
            (_, "u") => {
                return Ok(Err(format!(
                    "its partition {name} is UNLOGGED: its changes never reach the WAL (ALTER TABLE {} SET LOGGED)",
                    super::ddl::qualified(&name)
                )))
            }
            _ => {}
        }
        estimated += row.get::<_, i64>(6).max(0) as u64;
        partitions.push(Partition {
            name,
            parent: TableName::new(row.get::<_, String>(2), row.get::<_, String>(3)),
            bound: row.get(4),
            key: row.get(5),
        });
    }
    Ok(Ok((Partitioning { key, partitions }, estimated)))
}

/// For a table without a primary key: the unique index that identifies its rows as well as one
/// would, with its columns. That is the replica identity index when there is one (what the log
/// carries for updates and deletes), else the unique index on NOT NULL columns with the fewest
/// columns (not partial, not on expressions, not deferred). It becomes the table's key: chunks
/// are its ranges, changes are applied by it, and the target gets it as its primary key.
pub(crate) async fn substitute_key(
    client: &Client,
    table: &TableName,
    what: &str,
) -> Result<Option<SubstituteKey>> {
    let row = client
        .query_opt(
            "SELECT coalesce(c.conname, ic.relname), quote_ident(ic.relname),
                    ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, position)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.position)::text[]
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
             LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype = 'u'
             WHERE i.indrelid = $1::text::regclass AND i.indisunique AND i.indisvalid AND i.indimmediate
               AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = i.indnatts
               AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) k(attnum) JOIN pg_attribute a
                               ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE NOT a.attnotnull)
             ORDER BY i.indisreplident DESC, i.indnatts, ic.relname
             LIMIT 1",
            &[&super::ddl::qualified(table)],
        )
        .await
        .map_err(|error| classify(error, what))?;
    Ok(row.map(|row| SubstituteKey {
        name: row.get(0),
        index_sql: row.get(1),
        columns: row.get(2),
    }))
}

/// See [`substitute_key`].
pub(crate) struct SubstituteKey {
    /// The unique constraint's name, or the index's when it is no constraint.
    pub name: String,
    /// The index's name, quoted where SQL needs it (what `REPLICA IDENTITY USING INDEX` takes).
    pub index_sql: String,
    pub columns: Vec<String>,
}

/// Sequences owned by a selected table, and free-standing sequences in the selected tables'
/// schemas.
async fn read_sequence_definitions(
    client: &Client,
    selected: &BTreeMap<u32, TableName>,
) -> Result<Vec<Sequence>> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname,
                    format('AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s %s',
                           format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcache,
                           CASE WHEN s.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END),
                    d.refobjid, a.attname, d.deptype::text
             FROM pg_sequence s
             JOIN pg_class c ON c.oid = s.seqrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
             LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             ORDER BY n.nspname, c.relname",
            &[],
        )
        .await
        .map_err(|error| classify(error, "reading the source sequences"))?;
    let schemas: BTreeSet<&str> = selected.values().map(|name| name.schema.as_str()).collect();
    let mut sequences = Vec::new();
    for row in rows {
        let name = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
        let owner: Option<u32> = row.get(3);
        let owned_by = match owner {
            Some(owner) => match selected.get(&owner) {
                Some(table) => Some((table.clone(), row.get::<_, String>(4))),
                None => continue,
            },
            None if schemas.contains(name.schema.as_str()) => None,
            None => continue,
        };
        let identity = row.get::<_, Option<String>>(5).as_deref() == Some("i");
        sequences.push(Sequence {
            name,
            definition: row.get(2),
            last_value: None,
            owned_by,
            identity,
        });
    }
    Ok(sequences)
}

/// The current values of these sequences.
pub(super) async fn read_sequence_values(
    client: &Client,
    names: &[TableName],
) -> Result<Vec<Sequence>> {
    let rows = client
        .query(
            "SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences",
            &[],
        )
        .await
        .map_err(|error| classify(error, "reading sequence values"))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let name = TableName::new(row.get::<_, String>(0), row.get::<_, String>(1));
            names.contains(&name).then(|| Sequence {
                name,
                definition: String::new(),
                last_value: row.get(2),
                owned_by: None,
                identity: false,
            })
        })
        .collect())
}
