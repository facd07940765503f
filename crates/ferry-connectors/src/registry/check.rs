//! `ferry check` for a pair of databases: each side checked by its own connector; a MySQL
//! target also checks that it can hold what a PostgreSQL source has (types, names), a
//! PostgreSQL target what a MySQL source has.

use ferry_core::check::Finding;
use ferry_core::connector::Source;
use ferry_core::schema::Catalog;
use ferry_core::select::Selection;

use super::Endpoint;
use crate::{mysql, postgres};

/// What a pair is checked for.
pub struct CheckRequest<'a> {
    pub migration: &'a str,
    pub selection: &'a Selection,
    /// The source as the target will see it (after the migration's transforms: renames,
    /// dropped columns, type rules).
    pub target_view: &'a dyn Source,
    /// Whether the transforms turn MySQL's zero dates into NULL (a PostgreSQL target refuses
    /// them otherwise).
    pub zero_dates_to_null: bool,
}

/// The connectors' own checks for this pair.
pub async fn pair_findings(
    source: &Endpoint,
    target: &Endpoint,
    request: &CheckRequest<'_>,
) -> Vec<Finding> {
    let selection = request.selection;
    let migration = request.migration;
    match (source, target) {
        (Endpoint::Postgres(source), Endpoint::Postgres(target)) => {
            postgres::check(source, target, selection, migration).await
        }
        (Endpoint::Mysql(source_config), Endpoint::Mysql(target)) => {
            let mut findings =
                mysql::check(Some(source_config), Some(target), selection, None).await;
            if let Ok(catalog) = source.source().read_catalog(selection).await {
                let refuses = mysql::Unrepresentable {
                    zero_dates: false,
                    enum_errors: true,
                };
                findings
                    .extend(mysql::unrepresentable_values(source_config, &catalog, refuses).await);
            }
            findings
        }
        (Endpoint::Mysql(source), Endpoint::Postgres(target)) => {
            let mut findings = mysql::check(Some(source), None, selection, None).await;
            findings.extend(postgres::check_sides(None, Some(target), selection, migration).await);
            if let Ok(catalog) = request.target_view.read_catalog(selection).await {
                for problem in postgres::translate::untranslatable(&catalog) {
                    findings.push(Finding::error("target.unsupported_type", problem, "see the type mapping in docs/mysql.md: change the column on the source, or leave the table out with --tables"));
                }
                findings.extend(folded_cascade_keys(&catalog));
                findings.extend(postgres::check_translated_types(target, &catalog).await);
                let refuses = mysql::Unrepresentable {
                    zero_dates: !request.zero_dates_to_null,
                    enum_errors: false,
                };
                findings.extend(mysql::unrepresentable_values(source, &catalog, refuses).await);
            }
            findings
        }
        (Endpoint::Postgres(source_config), Endpoint::Mysql(target)) => {
            let mut findings =
                postgres::check_sides(Some(source_config), None, selection, migration).await;
            let catalog = source.source().read_catalog(selection).await.ok();
            findings.extend(mysql::check(None, Some(target), selection, catalog.as_ref()).await);
            findings
        }
    }
}

/// Foreign keys whose actions ferry reproduces on a PostgreSQL target by comparing text keys
/// exactly, where the MySQL source compares them without case or trailing spaces (a `_ci`
/// collation): a child whose key differs from its parent's only so would be missed.
fn folded_cascade_keys(catalog: &Catalog) -> Vec<Finding> {
    let mut findings = Vec::new();
    for table in &catalog.tables {
        for key in &table.foreign_keys {
            if !(key.on_delete.changes_rows() || key.on_update.changes_rows()) {
                continue;
            }
            let folded = key.columns.iter().any(|name| {
                table.column(name).is_some_and(|column| {
                    column
                        .collation
                        .as_deref()
                        .is_some_and(|collation| !collation.ends_with("_bin"))
                })
            });
            if folded {
                findings.push(Finding::warning(
                    "target.folded_cascade_key",
                    format!("foreign key {} of {} cascades over text compared without case on the source; on PostgreSQL ferry matches these keys exactly", key.name, table.name),
                    "make sure child keys are spelled as their parents' (ferry verify finds any row a cascade missed), or use a _bin collation for these columns on the source",
                ));
            }
        }
    }
    findings
}
