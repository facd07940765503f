//! `ferry check`: preflight.

use std::process::ExitCode;

use ferry_connectors::postgres;
use ferry_core::check::Severity;
use ferry_core::Result;

use crate::connect::configs;
use crate::report::EXIT_PROBLEMS;
use crate::settings::{resolve, FlagSettings};

pub async fn run(flags: &FlagSettings, json: bool) -> Result<ExitCode> {
    let settings = resolve(flags)?;
    let (source, target) = configs(&settings)?;
    let findings = postgres::check(&source, &target, &settings.selection, &settings.name).await;
    let errors = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Error)
        .count();
    if json {
        let report = serde_json::json!({ "source": source.describe(), "target": target.describe(), "ok": errors == 0, "findings": findings });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
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
