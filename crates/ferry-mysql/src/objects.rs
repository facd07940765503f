//! The objects ferry does not create on the target, as a script for the cutover runbook
//! (`ferry objects`): the database's procedures and functions, its views (each after the views
//! it reads), and the selected tables' triggers, each as the server's own `SHOW CREATE`.
//! Routines and triggers are wrapped in `DELIMITER ;;` so the `mysql`/`mariadb` client reads
//! their bodies whole. Definers are kept as the source has them (as `mysqldump` does).

use std::fmt::Write as _;

use ferry_core::schema::Catalog;
use ferry_core::{Error, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::config::MysqlConfig;
use super::connection::connect;
use super::ddl::ident;
use super::errors::classify;

const WHAT: &str = "reading the definitions of routines, views and triggers";

/// The script for the routines and views of the source database and the triggers of
/// `catalog`'s tables.
pub async fn objects_script(source: &MysqlConfig, catalog: &Catalog) -> Result<String> {
    let mut conn = connect(source, true).await?;
    let database = source.database();
    let mut script = String::new();
    let _ = writeln!(
        script,
        "-- Objects ferry does not create on the target, as the source defines them.\n-- Run at cutover, after the data is in place (mariadb DATABASE < FILE).\n-- Database: {database}; tables: {}.\n",
        catalog.tables.len()
    );
    let routines: Vec<(String, String)> = conn
        .exec(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY CREATED, ROUTINE_NAME",
            (database,),
        )
        .await
        .map_err(|error| classify(error, WHAT))?;
    let _ = writeln!(script, "-- procedures and functions");
    if routines.is_empty() {
        let _ = writeln!(script, "-- (none)\n");
    }
    for (kind, name) in routines {
        let statement = show_create(
            &mut conn,
            &format!("SHOW CREATE {kind} {}.{}", ident(database), ident(&name)),
            2,
        )
        .await?;
        let _ = writeln!(
            script,
            "-- {}\nDELIMITER ;;\n{statement} ;;\nDELIMITER ;\n",
            kind.to_lowercase()
        );
    }
    let views: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
            (database,),
        )
        .await
        .map_err(|error| classify(error, WHAT))?;
    let mut definitions = Vec::new();
    for name in views {
        let statement = show_create(
            &mut conn,
            &format!("SHOW CREATE VIEW {}.{}", ident(database), ident(&name)),
            1,
        )
        .await?;
        definitions.push((name, statement));
    }
    let _ = writeln!(script, "-- views");
    if definitions.is_empty() {
        let _ = writeln!(script, "-- (none)\n");
    }
    for (_, statement) in in_dependency_order(definitions) {
        let _ = writeln!(script, "-- view\n{statement};\n");
    }
    let triggers: Vec<(String, String)> = conn
        .exec(
            "SELECT EVENT_OBJECT_TABLE, TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER, TRIGGER_NAME",
            (database,),
        )
        .await
        .map_err(|error| classify(error, WHAT))?;
    let _ = writeln!(script, "-- triggers");
    let mut any = false;
    for (table, name) in triggers {
        if !catalog
            .tables
            .iter()
            .any(|selected| selected.name.name == table)
        {
            continue;
        }
        any = true;
        let statement = show_create(
            &mut conn,
            &format!("SHOW CREATE TRIGGER {}.{}", ident(database), ident(&name)),
            2,
        )
        .await?;
        let _ = writeln!(
            script,
            "-- trigger on {table}\nDELIMITER ;;\n{statement} ;;\nDELIMITER ;\n"
        );
    }
    if !any {
        let _ = writeln!(script, "-- (none)\n");
    }
    Ok(script)
}

/// Column `column` of a `SHOW CREATE ...` answer; an error when the server hides it (the
/// user lacks the privilege to see the body).
async fn show_create(conn: &mut Conn, statement: &str, column: usize) -> Result<String> {
    let row: Option<Row> = conn
        .query_first(statement)
        .await
        .map_err(|error| classify(error, WHAT))?;
    row.and_then(|row| row.get_opt::<Option<String>, _>(column)?.ok().flatten())
        .ok_or_else(|| {
            Error::operator(
                "source.privilege",
                format!("{statement}: the server did not show the definition"),
            )
            .with_hint("the source user needs SHOW VIEW, and for routines and triggers the privileges to see their bodies (or to be their definer)")
        })
}

/// Views ordered so that each comes after the views its definition names.
fn in_dependency_order(mut views: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut ordered: Vec<(String, String)> = Vec::with_capacity(views.len());
    while !views.is_empty() {
        let ready = views
            .iter()
            .position(|(name, definition)| {
                views.iter().all(|(other, _)| {
                    other == name
                        || !definition.contains(&format!("`{}`", other.replace('`', "``")))
                })
            })
            // A cycle cannot be created by MySQL; take the first to end.
            .unwrap_or(0);
        ordered.push(views.remove(ready));
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_follow_the_views_they_read() {
        let views = vec![
            (
                "a".to_string(),
                "CREATE VIEW `a` AS select * from `b`".to_string(),
            ),
            (
                "b".to_string(),
                "CREATE VIEW `b` AS select * from `c`".to_string(),
            ),
            ("c".to_string(), "CREATE VIEW `c` AS select 1".to_string()),
        ];
        let names: Vec<String> = in_dependency_order(views)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(names, ["c", "b", "a"]);
    }
}
