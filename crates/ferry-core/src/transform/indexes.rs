//! Secondary indexes (and unique constraints) of a transformed table, rewritten for its target
//! name and column names. Pure.
//!
//! Definitions are in the source's dialect, in the forms the catalogs write:
//! - MySQL: ``CREATE [UNIQUE] INDEX `name` ON `table` (`a`, `b`(10))``;
//! - PostgreSQL: `CREATE [UNIQUE] INDEX name ON schema.table USING method (a, "B")` and
//!   unique constraints `UNIQUE (a, b)`.
//!
//! Only plain column lists are rewritten. An index on an expression, a partial index, one with
//! INCLUDE columns, one on a dropped column, foreign keys and other constraints are left out;
//! the caller reports them.

use crate::schema::{SecondaryKind, SecondaryObject, TableName};

/// A MySQL backquoted identifier at the start of `text` (``` `` ``` inside), and the rest.
fn mysql_identifier(text: &str) -> Option<(String, &str)> {
    let rest = text.strip_prefix('`')?;
    let mut name = String::new();
    let mut characters = rest.char_indices();
    while let Some((index, character)) = characters.next() {
        if character == '`' {
            if rest[index + 1..].starts_with('`') {
                name.push('`');
                characters.next();
                continue;
            }
            return Some((name, &rest[index + 1..]));
        }
        name.push(character);
    }
    None
}

fn mysql_quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A PostgreSQL identifier as `pg_get_indexdef` writes it (plain or double-quoted).
fn postgres_identifier(text: &str) -> Option<String> {
    if let Some(inner) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        return (!inner.replace("\"\"", "").contains('"')).then(|| inner.replace("\"\"", "\""));
    }
    let plain = !text.is_empty()
        && text.chars().all(|character| {
            character.is_ascii_lowercase()
                || character.is_ascii_digit()
                || character == '_'
                || character == '$'
        })
        && !text.starts_with(|character: char| character.is_ascii_digit() || character == '$');
    plain.then(|| text.to_string())
}

fn postgres_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Rewrites `object` for the target under the name `name`; `column` maps a source column to its
/// target name, or to None when the column is dropped. The statement head is rebuilt from the
/// name, never cut out of the definition (a quoted name may hold ` ON `).
pub(super) fn rewrite(
    object: &SecondaryObject,
    dialect: &str,
    target: &TableName,
    name: &str,
    column: impl Fn(&str) -> Option<String>,
) -> Option<SecondaryObject> {
    let unique = object.definition.starts_with("CREATE UNIQUE INDEX");
    let definition = match (dialect, object.kind) {
        ("mysql", SecondaryKind::Index) => {
            let rest = object.definition.strip_prefix(if unique {
                "CREATE UNIQUE INDEX "
            } else {
                "CREATE INDEX "
            })?;
            let (_, rest) = mysql_identifier(rest)?;
            let rest = rest.strip_prefix(" ON ")?;
            let (_, rest) = mysql_identifier(rest)?;
            let list = rest.strip_prefix(" (")?.strip_suffix(')')?;
            let mut parts = Vec::new();
            for part in list.split(", ") {
                let (name, suffix) = mysql_identifier(part)?;
                let prefix_length = suffix.is_empty()
                    || suffix
                        .strip_prefix('(')
                        .and_then(|inside| inside.strip_suffix(')'))
                        .is_some_and(|digits| digits.bytes().all(|byte| byte.is_ascii_digit()));
                if !prefix_length {
                    return None;
                }
                parts.push(format!("{}{suffix}", mysql_quote(&column(&name)?)));
            }
            format!(
                "CREATE {}INDEX {} ON {} ({})",
                if unique { "UNIQUE " } else { "" },
                mysql_quote(name),
                mysql_quote(&target.name),
                parts.join(", ")
            )
        }
        ("postgres", SecondaryKind::Index) => {
            let (_, rest) = object.definition.rsplit_once(" USING ")?;
            let (method, rest) = rest.split_once(" (")?;
            if !method
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
            {
                return None;
            }
            let list = rest.strip_suffix(')')?;
            if list.contains('(') || list.contains(')') {
                return None;
            }
            let mut parts = Vec::new();
            for part in list.split(", ") {
                let (name, order) = match part.rsplit_once(' ') {
                    Some((name, order)) if matches!(order, "DESC" | "ASC") => (name, Some(order)),
                    _ => (part, None),
                };
                let mapped = postgres_quote(&column(&postgres_identifier(name)?)?);
                parts.push(match order {
                    Some(order) => format!("{mapped} {order}"),
                    None => mapped,
                });
            }
            format!(
                "CREATE {}INDEX {} ON {}.{} USING {method} ({})",
                if unique { "UNIQUE " } else { "" },
                postgres_quote(name),
                postgres_quote(&target.schema),
                postgres_quote(&target.name),
                parts.join(", ")
            )
        }
        ("postgres", SecondaryKind::Constraint) => {
            let list = object
                .definition
                .strip_prefix("UNIQUE (")?
                .strip_suffix(')')?;
            let parts = list
                .split(", ")
                .map(|name| Some(postgres_quote(&column(&postgres_identifier(name)?)?)))
                .collect::<Option<Vec<_>>>()?;
            format!("UNIQUE ({})", parts.join(", "))
        }
        _ => return None,
    };
    Some(SecondaryObject {
        name: name.to_string(),
        kind: object.kind,
        definition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: SecondaryKind, definition: &str) -> SecondaryObject {
        SecondaryObject {
            name: "by_x".into(),
            kind,
            definition: definition.into(),
        }
    }

    fn renamed(column: &str) -> Option<String> {
        match column {
            "name" => Some("full_name".into()),
            "secret" => None,
            other => Some(other.to_string()),
        }
    }

    #[test]
    fn plain_column_indexes_follow_the_renames() {
        let target = TableName::new("public", "clients");
        let mysql = rewrite(
            &object(
                SecondaryKind::Index,
                "CREATE UNIQUE INDEX `by_x` ON `customers` (`name`, `re``gion`(10))",
            ),
            "mysql",
            &target,
            "by_x",
            renamed,
        )
        .unwrap();
        assert_eq!(
            mysql.definition,
            "CREATE UNIQUE INDEX `by_x` ON `clients` (`full_name`, `re``gion`(10))"
        );
        let postgres = rewrite(
            &object(
                SecondaryKind::Index,
                "CREATE INDEX by_x ON shop.customers USING btree (name, \"Region\" DESC)",
            ),
            "postgres",
            &target,
            "clients_by_x",
            renamed,
        )
        .unwrap();
        assert_eq!(
            postgres.definition,
            "CREATE INDEX \"clients_by_x\" ON \"public\".\"clients\" USING btree (\"full_name\", \"Region\" DESC)"
        );
        let unique = rewrite(
            &object(SecondaryKind::Constraint, "UNIQUE (name, region)"),
            "postgres",
            &target,
            "by_x",
            renamed,
        )
        .unwrap();
        assert_eq!(unique.definition, "UNIQUE (\"full_name\", \"region\")");
    }

    #[test]
    fn dropped_columns_expressions_and_foreign_keys_are_left_out() {
        let target = TableName::new("public", "clients");
        for (kind, dialect, definition) in [
            (SecondaryKind::Index, "mysql", "CREATE INDEX `by_x` ON `customers` (`secret`)"),
            (SecondaryKind::Index, "postgres", "CREATE INDEX by_x ON shop.customers USING btree (lower(name))"),
            (SecondaryKind::Index, "postgres", "CREATE INDEX by_x ON shop.customers USING btree (name) WHERE (region = 'EU'::text)"),
            (SecondaryKind::ForeignKey, "postgres", "FOREIGN KEY (region) REFERENCES regions(id)"),
            (SecondaryKind::Constraint, "postgres", "CHECK (qty > 0)"),
        ] {
            assert!(rewrite(&object(kind, definition), dialect, &target, "by_x", renamed).is_none(), "{definition}");
        }
    }
}
