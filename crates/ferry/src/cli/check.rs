//! `ferry check`: preflight.

use std::process::ExitCode;

use ferry_connectors::registry::{pair_findings, CheckRequest};
use ferry_core::check::{Finding, Severity};
use ferry_core::Result;

use crate::connect::{endpoints, require_separate_servers, Endpoint};
use crate::report::EXIT_PROBLEMS;
use crate::settings::{resolve, FlagSettings};

pub(super) async fn run(flags: &FlagSettings, json: bool) -> Result<ExitCode> {
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

/// The connectors' checks of this pair, then what the migration's transforms and a later
/// switch-over need.
async fn findings(
    source: &Endpoint,
    target: &Endpoint,
    settings: &crate::settings::Settings,
) -> Vec<Finding> {
    // As the target will see it: after the config's renames.
    let target_view =
        ferry_engine::TransformedSource::new(source.source(), settings.transforms.clone());
    let request = CheckRequest {
        migration: &settings.name,
        selection: &settings.selection,
        target_view: &target_view,
        zero_dates_to_null: settings.transforms.zero_dates_to_null(),
    };
    let mut findings = pair_findings(source, target, &request).await;
    if !settings.transforms.is_empty() {
        findings.extend(filter_findings(source, settings).await);
    }
    if settings.transforms.is_empty() {
        findings.extend(switch_over_findings(source, target).await);
    }
    findings
}

/// What a later `ferry cutover` would refuse (privileges, binary log settings, one server for
/// both sides), said now as warnings: the migration itself does not need them.
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
    if let Err(error) = require_separate_servers(source, target).await {
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

/// What the source says of its tables that have a row filter.
async fn filter_findings(source: &Endpoint, settings: &crate::settings::Settings) -> Vec<Finding> {
    let Ok(catalog) = source.source().read_catalog(&settings.selection).await else {
        return Vec::new();
    };
    let filtered: Vec<_> = catalog
        .tables
        .iter()
        .filter(|table| settings.transforms.filter(&table.name).is_some())
        .map(|table| table.name.clone())
        .collect();
    source.filtered_table_findings(&filtered).await
}
