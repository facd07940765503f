//! User-defined types the selected tables use: enums, domains (with their CHECKs), composite
//! types, range types and the types extensions provide, read in dependency order from the source
//! and created on a PostgreSQL target before the tables.
//!
//! A type is read once, after every type its definition uses (a domain's base type, a
//! composite's attribute types, a range's subtype; arrays stand for their element type), so the
//! catalog's list can be created front to back. A type that belongs to an extension is not
//! defined by ferry: the target creates the extension (when the target has it available), which
//! brings the type with it.

use std::collections::BTreeSet;

use ferry_core::schema::{UserType, UserTypeKind};
use ferry_core::{Error, Result, TableName};
use tokio_postgres::Client;

use super::ddl::{ident, literal, qualified};
use super::errors::classify;

/// A column type's identity as both the catalog and the log give it: oid and modifier.
pub(super) fn type_signature(oid: u32, modifier: i32) -> String {
    format!("{oid}:{modifier}")
}

/// The user types with these oids and every user type they depend on, dependencies first.
pub(super) async fn read_user_types(
    client: &Client,
    roots: &BTreeSet<u32>,
) -> Result<Vec<UserType>> {
    let mut ordered = Vec::new();
    let mut visited = BTreeSet::new();
    for &oid in roots {
        visit(client, oid, &mut visited, &mut ordered).await?;
    }
    Ok(ordered)
}

/// Depth-first: dependencies are pushed before the type itself.
async fn visit(
    client: &Client,
    oid: u32,
    visited: &mut BTreeSet<u32>,
    ordered: &mut Vec<UserType>,
) -> Result<()> {
    // An explicit stack keeps the recursion out of async fns: (oid, dependencies pushed).
    let mut stack: Vec<(u32, Option<UserType>)> = vec![(oid, None)];
    while let Some((oid, read)) = stack.pop() {
        match read {
            Some(user_type) => ordered.push(user_type),
            None => {
                if !visited.insert(oid) {
                    continue;
                }
                let Some((user_type, dependencies)) = read_type(client, oid).await? else {
                    continue;
                };
                stack.push((oid, Some(user_type)));
                for dependency in dependencies.into_iter().rev() {
                    if !visited.contains(&dependency) {
                        stack.push((dependency, None));
                    }
                }
            }
        }
    }
    Ok(())
}

/// One type and the oids of the user types its definition uses; `None` for a built-in type.
async fn read_type(client: &Client, oid: u32) -> Result<Option<(UserType, Vec<u32>)>> {
    let what = "reading user-defined types";
    // An array stands for its element type; a multirange for its range.
    let row = client
        .query_one(
            "SELECT t.oid, n.nspname, t.typname, t.typtype::text,
                    n.nspname IN ('pg_catalog', 'information_schema'),
                    (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                      WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                        AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')
             FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE t.oid = (SELECT CASE WHEN a.typelem <> 0 AND a.typlen = -1 AND a.typtype = 'b' THEN a.typelem
                                        WHEN a.typtype = 'm' THEN (SELECT rngtypid FROM pg_range WHERE rngmultitypid = a.oid)
                                        ELSE a.oid END
                            FROM pg_type a WHERE a.oid = $1)",
            &[&oid],
        )
        .await
        .map_err(|error| classify(error, what))?;
    let (type_oid, schema, name, kind, built_in, extension): (
        u32,
        String,
        String,
        String,
        bool,
        Option<String>,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    if built_in {
        return Ok(None);
    }
    let name = TableName::new(schema, name);
    let mut user_type = UserType::enumeration(name.clone(), Vec::new());
    if let Some(extension) = extension {
        user_type.kind = UserTypeKind::Extension;
        user_type.extension = Some(extension);
        return Ok(Some((user_type, Vec::new())));
    }
    let mut dependencies = Vec::new();
    match kind.as_str() {
        "e" => {
            let labels = client
                .query(
                    "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder",
                    &[&type_oid],
                )
                .await
                .map_err(|error| classify(error, what))?;
            user_type.enum_labels = labels.iter().map(|label| label.get(0)).collect();
        }
        "d" => {
            let row = client
                .query_one(
                    "SELECT format_type(t.typbasetype, t.typtypmod), t.typbasetype, t.typnotnull, t.typdefault,
                            CASE WHEN t.typcollation <> 0 AND t.typcollation <> b.typcollation
                                 THEN (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co
                                       JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = t.typcollation) END,
                            ARRAY(SELECT format('CONSTRAINT %I %s', c.conname, pg_get_constraintdef(c.oid))
                                  FROM pg_constraint c WHERE c.contypid = t.oid AND c.contype = 'c' ORDER BY c.conname)::text[]
                     FROM pg_type t JOIN pg_type b ON b.oid = t.typbasetype WHERE t.oid = $1",
                    &[&type_oid],
                )
                .await
                .map_err(|error| classify(error, what))?;
            let base: String = row.get(0);
            dependencies.push(row.get::<_, u32>(1));
            let mut definition = base.clone();
            if let Some(collation) = row.get::<_, Option<String>>(4) {
                definition.push_str(&format!(" COLLATE {collation}"));
            }
            if let Some(default) = row.get::<_, Option<String>>(3) {
                definition.push_str(&format!(" DEFAULT {default}"));
            }
            if row.get::<_, bool>(2) {
                definition.push_str(" NOT NULL");
            }
            for check in row.get::<_, Vec<String>>(5) {
                definition.push(' ');
                definition.push_str(&check);
            }
            user_type.kind = UserTypeKind::Domain;
            user_type.base_type = Some(base);
            user_type.definition = definition;
        }
        "c" => {
            let attributes = client
                .query(
                    "SELECT format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
                              || CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                                      THEN (SELECT format(' COLLATE %I.%I', cn.nspname, co.collname) FROM pg_collation co
                                            JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation)
                                      ELSE '' END,
                            a.atttypid
                     FROM pg_type ct JOIN pg_attribute a ON a.attrelid = ct.typrelid
                     JOIN pg_type t ON t.oid = a.atttypid
                     WHERE ct.oid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                    &[&type_oid],
                )
                .await
                .map_err(|error| classify(error, what))?;
            let parts: Vec<String> = attributes.iter().map(|row| row.get(0)).collect();
            dependencies.extend(attributes.iter().map(|row| row.get::<_, u32>(1)));
            user_type.kind = UserTypeKind::Composite;
            user_type.definition = parts.join(", ");
        }
        "r" => {
            let row = client
                .query_one(
                    "SELECT format_type(r.rngsubtype, NULL), r.rngsubtype,
                            format('%I.%I', on_.nspname, o.opcname), o.opcdefault,
                            CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> s.typcollation
                                 THEN (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co
                                       JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = r.rngcollation) END,
                            CASE WHEN r.rngcanonical <> 0 THEN r.rngcanonical::regproc::text END,
                            CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::regproc::text END,
                            (SELECT format('%I.%I', mn.nspname, m.typname) FROM pg_type m
                              JOIN pg_namespace mn ON mn.oid = m.typnamespace WHERE m.oid = r.rngmultitypid)
                     FROM pg_range r JOIN pg_type s ON s.oid = r.rngsubtype
                     JOIN pg_opclass o ON o.oid = r.rngsubopc JOIN pg_namespace on_ ON on_.oid = o.opcnamespace
                     WHERE r.rngtypid = $1",
                    &[&type_oid],
                )
                .await
                .map_err(|error| classify(error, what))?;
            dependencies.push(row.get::<_, u32>(1));
            let mut options = vec![format!("SUBTYPE = {}", row.get::<_, String>(0))];
            if !row.get::<_, bool>(3) {
                options.push(format!("SUBTYPE_OPCLASS = {}", row.get::<_, String>(2)));
            }
            if let Some(collation) = row.get::<_, Option<String>>(4) {
                options.push(format!("COLLATION = {collation}"));
            }
            if let Some(canonical) = row.get::<_, Option<String>>(5) {
                options.push(format!("CANONICAL = {canonical}"));
            }
            if let Some(difference) = row.get::<_, Option<String>>(6) {
                options.push(format!("SUBTYPE_DIFF = {difference}"));
            }
            if let Some(multirange) = row.get::<_, Option<String>>(7) {
                options.push(format!("MULTIRANGE_TYPE_NAME = {multirange}"));
            }
            user_type.kind = UserTypeKind::Range;
            user_type.definition = options.join(", ");
        }
        _ => {
            // A base type written in C outside any extension: nothing ferry can re-create.
            user_type.kind = UserTypeKind::Extension;
        }
    }
    Ok(Some((user_type, dependencies)))
}

/// The statement creating `user_type` (for an extension's type: the extension, in the type's
/// schema), or `None` for a type ferry cannot create (a C type outside any extension).
pub(super) fn create_statement(user_type: &UserType) -> Option<String> {
    let name = qualified(&user_type.name);
    Some(match user_type.kind {
        UserTypeKind::Enum => {
            let labels: Vec<String> = user_type
                .enum_labels
                .iter()
                .map(|label| literal(label))
                .collect();
            format!("CREATE TYPE {name} AS ENUM ({})", labels.join(", "))
        }
        UserTypeKind::Domain => format!("CREATE DOMAIN {name} AS {}", user_type.definition),
        UserTypeKind::Composite => format!("CREATE TYPE {name} AS ({})", user_type.definition),
        UserTypeKind::Range => format!("CREATE TYPE {name} AS RANGE ({})", user_type.definition),
        UserTypeKind::Extension => format!(
            "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}",
            ident(user_type.extension.as_deref()?),
            ident(&user_type.name.schema)
        ),
    })
}

/// Creates on the target every type of `types` (in order) that it does not have yet. An
/// extension the target does not make available, or a type ferry cannot create, is an operator
/// error naming it.
pub(super) async fn create_user_types(client: &Client, types: &[UserType]) -> Result<()> {
    for user_type in types {
        let exists: bool = client
            .query_one(
                "SELECT to_regtype($1) IS NOT NULL",
                &[&qualified(&user_type.name)],
            )
            .await
            .map_err(|error| classify(error, "looking up a type on the target"))?
            .get(0);
        if exists {
            continue;
        }
        if let Some(problem) = missing_on_target(client, user_type).await? {
            return Err(problem);
        }
        let Some(statement) = create_statement(user_type) else {
            continue;
        };
        client.batch_execute(&statement).await.map_err(|error| {
            classify(
                error,
                &format!("creating type {} on the target", user_type.name),
            )
        })?;
    }
    Ok(())
}

/// Why `user_type` (missing on the target) cannot be created there, if it cannot: an extension
/// the target's server does not have installed, or a type written in C outside any extension.
pub(super) async fn missing_on_target(
    client: &Client,
    user_type: &UserType,
) -> Result<Option<Error>> {
    if user_type.kind != UserTypeKind::Extension {
        return Ok(None);
    }
    let Some(extension) = &user_type.extension else {
        return Ok(Some(
            Error::operator(
                "target.missing_type",
                format!(
                    "type {} is a base type defined outside any extension, and the target does not have it",
                    user_type.name
                ),
            )
            .with_hint("create the type on the target first (with its input and output functions), or leave the tables that use it out"),
        ));
    };
    let available: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1)",
            &[extension],
        )
        .await
        .map_err(|error| classify(error, "looking up available extensions on the target"))?
        .get(0);
    if available {
        // Only a superuser creates an extension that is not marked trusted (PostGIS is not).
        let allowed: bool = client
            .query_one(
                "SELECT r.rolsuper OR coalesce((SELECT bool_or(v.trusted) FROM pg_available_extension_versions v WHERE v.name = $1), false)
                 FROM pg_roles r WHERE r.rolname = current_user",
                &[extension],
            )
            .await
            .map_err(|error| classify(error, "looking up who may create extensions on the target"))?
            .get(0);
        if allowed {
            return Ok(None);
        }
        return Ok(Some(
            Error::operator(
                "target.privilege",
                format!(
                    "type {} comes from extension {extension}, which only a superuser can create on the target (it is not a trusted extension)",
                    user_type.name
                ),
            )
            .with_hint(format!("as a superuser on the target: CREATE EXTENSION {extension} WITH SCHEMA {}", user_type.name.schema)),
        ));
    }
    Ok(Some(
        Error::operator(
            "target.missing_extension",
            format!(
                "type {} comes from extension {extension}, which the target server does not have installed",
                user_type.name
            ),
        )
        .with_hint(format!("install the extension's package on the target server (then ferry creates it: CREATE EXTENSION {extension}), or leave the tables that use it out")),
    ))
}
