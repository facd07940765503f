//! `ferry check`: preflight.

use std::process::ExitCode;

use ferry_connectors::{mysql, postgres};
use ferry_core::check::{Finding, Severity};
use ferry_core::Result;

use crate::connect::{endpoints, Endpoint};
use crate::report::EXIT_PROBLEMS;
use crate::settings::{resolve, FlagSettings};

pub async fn run(flags: &FlagSettings, json: bool) -> Result<ExitCode> {
    let settings = resolve(flags)?;
    let (source, target) = endpoints(&settings)?;
    let findings = findings(&source, &target, &settings).await;
    let errors = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Error)
        .count();
    if json {
        let report = serde_json::json!({ "source": source.describe(), "target": target.describe(), "ok": errors == 0, "findings": findings });
        crate::report::print_json(&report);
    } else {
        println!("checking {} -> {}", source.describe(), target.describe());
        for finding in &findings {
            let label = match finding.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            println!(
                "{label}[{}]: {}\n  fix: {}",
                finding.code, finding.message, finding.hint
            );
        }
        let warnings = findings.len() - errors;
        if errors == 0 {
            println!("ok: ready to migrate ({warnings} warning(s))");
        } else {
            println!("{errors} problem(s) and {warnings} warning(s) found");
        }
    }
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PROBLEMS)
    })
}

/// Each side checked by its own connector; a MySQL target also checks that it can hold what a
/// PostgreSQL source has (types, names), a PostgreSQL target what a MySQL source has.
async fn findings(
    source: &Endpoint,
    target: &Endpoint,
    settings: &crate::settings::Settings,
) -> Vec<Finding> {
    let mut findings = engine_pair_findings(source, target, settings).await;
    if let (Endpoint::Postgres(config), false) = (source, settings.transforms.is_empty()) {
        findings.extend(filter_findings(config, source, settings).await);
    }
    if settings.transforms.is_empty() {
        findings.extend(switch_over_findings(source, target).await);
    }
    findings
}

/// What a later `ferry cutover` would refuse (privileges, binary log settings, one MySQL server
/// for both sides), said now as warnings: the migration itself does not need them.
async fn switch_over_findings(source: &Endpoint, target: &Endpoint) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (side, endpoint) in [("source", source), ("target", target)] {
        if let Err(error) = endpoint.control().check_switchover().await {
            if error.code().starts_with("cutover.") {
                findings.push(Finding::warning(
                    "cutover.not_ready",
                    format!(
                        "switching applications over later will be refused on the {side}: {error}"
                    ),
                    error.hint().unwrap_or("see docs/cutover.md").to_string(),
                ));
            }
        }
    }
    if let Err(error) = crate::connect::require_separate_servers(source, target).await {
        if error.code() == "cutover.same_server" {
            findings.push(Finding::warning(
                "cutover.not_ready",
                error.message().to_string(),
                error.hint().unwrap_or("see docs/cutover.md").to_string(),
            ));
        }
    }
    findings
}

/// A row filter on a PostgreSQL table whose updates may leave out unchanged large values: a row
/// entering the filter that way is read from the source (an extra query per such update), which
/// REPLICA IDENTITY FULL avoids.
async fn filter_findings(
    config: &postgres::ConnectionConfig,
    source: &Endpoint,
    settings: &crate::settings::Settings,
) -> Vec<Finding> {
    let Ok(catalog) = source.source().read_catalog(&settings.selection).await else {
        return Vec::new();
    };
    let filtered: Vec<_> = catalog
        .tables
        .iter()
        .filter(|table| settings.transforms.filter(&table.name).is_some())
        .map(|table| table.name.clone())
        .collect();
    if filtered.is_empty() {
        return Vec::new();
    }
    match postgres::partial_update_tables(config, &filtered).await {
        Ok(tables) => tables
            .into_iter()
            .map(|table| {
                Finding::warning(
                    "transform.partial_image",
                    format!("{table} has a row filter and columns PostgreSQL may leave out of an update (unchanged large values): a row entering the filter that way is read from the source"),
                    format!("on the source: ALTER TABLE {table} REPLICA IDENTITY FULL makes every update carry the whole row, with no extra read"),
                )
            })
            .collect(),
        Err(error) => vec![Finding::failed("source.check_failed", &error)],
    }
}

/// The connectors' own checks for this pair of engines.
async fn engine_pair_findings(
    source: &Endpoint,
    target: &Endpoint,
    settings: &crate::settings::Settings,
) -> Vec<Finding> {
    let selection = &settings.selection;
    match (source, target) {
        (Endpoint::Postgres(source), Endpoint::Postgres(target)) => {
            postgres::check(source, target, selection, &settings.name).await
        }
        (Endpoint::Mysql(source), Endpoint::Mysql(target)) => {
            let mut findings = mysql::check(Some(source), Some(target), selection, None).await;
            if let Ok(catalog) = Endpoint::Mysql(source.clone())
                .source()
                .read_catalog(selection)
                .await
            {
                let refuses = mysql::Unrepresentable {
                    zero_dates: false,
                    enum_errors: true,
                };
                findings.extend(mysql::unrepresentable_values(source, &catalog, refuses).await);
            }
            findings
        }
        (Endpoint::Mysql(source), Endpoint::Postgres(target)) => {
            let mut findings = mysql::check(Some(source), None, selection, None).await;
            findings
                .extend(postgres::check_sides(None, Some(target), selection, &settings.name).await);
            // As the target will see it: after the config's renames.
            let transformed = ferry_engine::TransformedSource::new(
                Endpoint::Mysql(source.clone()).source(),
                settings.transforms.clone(),
            );
            if let Ok(catalog) =
                ferry_core::connector::Source::read_catalog(&transformed, selection).await
            {
                for problem in postgres::translate::untranslatable(&catalog) {
                    findings.push(Finding::error("target.unsupported_type", problem, "see the type mapping in docs/mysql.md: change the column on the source, or leave the table out with --tables"));
                }
                findings.extend(folded_cascade_keys(&catalog));
                findings.extend(postgres::check_translated_types(target, &catalog).await);
                let refuses = mysql::Unrepresentable {
                    zero_dates: !settings.transforms.zero_dates_to_null(),
                    enum_errors: false,
                };
                findings.extend(mysql::unrepresentable_values(source, &catalog, refuses).await);
            }
            findings
        }
        (Endpoint::Postgres(source), Endpoint::Mysql(target)) => {
            let mut findings =
                postgres::check_sides(Some(source), None, selection, &settings.name).await;
            let catalog = Endpoint::Postgres(source.clone())
                .source()
                .read_catalog(selection)
                .await
                .ok();
            findings.extend(mysql::check(None, Some(target), selection, catalog.as_ref()).await);
            findings
        }
    }
}

/// Foreign keys whose actions ferry reproduces on a PostgreSQL target by comparing text keys
/// exactly, where the MySQL source compares them without case or trailing spaces (a `_ci`
/// collation): a child whose key differs from its parent's only so would be missed.
fn folded_cascade_keys(catalog: &ferry_core::schema::Catalog) -> Vec<Finding> {
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
